"""Negotiating backup contracts through the services (backup/services/contracts.py): who may say what, when, and
that every round is kept and every refusal changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from backup import services
from backup.models import Contract, ContractRound
from images.ingest import ingest_instance
from images.models import Patient
from subscribers import services as subscriber_services
from subscribers.access import OPERATOR, Principal, principal_for_user
from subscribers.models import AuditEvent, Notification, Role
from tests.dicom_files import synth_bytes

Status = Contract.Status


def terms(**overrides) -> dict:
    """Terms as a form or a JSON client sends them (strings)."""
    today = timezone.localdate()
    base = {
        "mode": "all_at_time",
        "coverage": "all",
        "coverage_items": [],
        "schedule_time": "02:00",
        "quiet_minutes": 60,
        "period_start": today.isoformat(),
        "period_end": (today + timedelta(days=364)).isoformat(),
        "accounting_points": "10.00",
        "rate": "5.0000",
        "currency": "EUR",
        "target": "backup",
    }
    return {**base, **overrides}


def ingest(institution, **kwargs):
    """A real DICOM instance through the ingest service (kwargs go to the synthesizer)."""
    sender = Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER}), is_provider_staff=True)
    return ingest_instance(principal=sender, data=synth_bytes("CT", rows=16, cols=16, **kwargs), source="test").instance


def state(contract: Contract) -> tuple:
    """Everything a refused action must leave as it was."""
    contract = Contract.objects.get(pk=contract.pk)
    return (
        contract.status,
        contract.awaiting,
        contract.accepted_at,
        contract.terminated_at,
        contract.mode,
        contract.rate,
        contract.accounting_points,
        list(contract.rounds.values_list("number", "action", "party")),
        AuditEvent.objects.filter(action__startswith="backup.contract").count(),
        Notification.objects.count(),
    )


@pytest.fixture
def staff(staff_user):
    return principal_for_user(staff_user, None)


@pytest.fixture
def proposed(staff, inst_a, admin_a):
    return services.propose_contract(principal=staff, institution=inst_a, terms=terms(), title="Nightly backup", message="Our offer.")


# --- The whole negotiation --------------------------------------------------------------------------------------


def test_propose_counter_counter_accept_keeps_every_round_with_party_user_and_terms(staff, staff_user, inst_a, admin_a, principal_a):
    contract = services.propose_contract(principal=staff, institution=inst_a, terms=terms(), message="Our offer.")
    assert (contract.status, contract.awaiting, contract.runs_allowed) == (Status.PROPOSED, "institution", False)

    services.counter_propose(
        principal=principal_a,
        contract=contract,
        terms={"mode": "per_examination", "rate": "4.0000", "accounting_points": "18.50"},
        message="Per study suits us; cheaper please.",
        expected_round=1,
    )
    contract.refresh_from_db()
    assert (contract.status, contract.awaiting) == (Status.COUNTERED, "provider")

    services.counter_propose(principal=staff, contract=contract, terms={"rate": "4.5000"}, message="Meet in the middle.", expected_round=2)
    contract.refresh_from_db()
    assert (contract.status, contract.awaiting) == (Status.PROPOSED, "institution")

    services.accept_contract(principal=principal_a, contract=contract, message="Agreed.", expected_round=3)
    contract.refresh_from_db()
    assert contract.status == Status.ACCEPTED and contract.awaiting == "" and contract.accepted_at is not None
    assert contract.runs_allowed
    assert (contract.mode, contract.rate, contract.accounting_points) == ("per_examination", Decimal("4.5000"), Decimal("18.50"))

    rounds = list(contract.rounds.order_by("number"))
    assert [(r.number, r.action, r.party, r.user) for r in rounds] == [
        (1, "propose", "provider", staff_user),
        (2, "counter", "institution", admin_a.user),
        (3, "counter", "provider", staff_user),
        (4, "accept", "institution", admin_a.user),
    ]
    assert [r.message for r in rounds] == ["Our offer.", "Per study suits us; cheaper please.", "Meet in the middle.", "Agreed."]
    assert [(r.terms["mode"], r.terms["rate"], r.terms["accounting_points"]) for r in rounds] == [
        ("all_at_time", "5.0000", "10.00"),
        ("per_examination", "4.0000", "18.50"),
        ("per_examination", "4.5000", "18.50"),
        ("per_examination", "4.5000", "18.50"),
    ]
    # JSON-safe snapshots: what was stored reads back as the same JSON.
    for r in rounds:
        assert json.loads(json.dumps(r.terms)) == r.terms
        assert r.terms["schedule_time"] == "02:00" and r.terms["period_start"] == timezone.localdate().isoformat()

    actions = list(AuditEvent.objects.filter(action__startswith="backup.contract").order_by("pk").values_list("action", "institution"))
    assert actions == [
        ("backup.contract.propose", inst_a.pk),
        ("backup.contract.counter", inst_a.pk),
        ("backup.contract.counter", inst_a.pk),
        ("backup.contract.accept", inst_a.pk),
    ]
    # Each step told the other side: the institution's admin of the provider's proposals, staff of the institution's.
    assert Notification.objects.filter(user=admin_a.user).count() == 2
    assert Notification.objects.filter(user=staff_user).count() == 2
    assert Notification.objects.filter(user=staff_user, text__contains="accepted").exists()


def test_provider_can_accept_the_institutions_counter_proposal(staff, proposed, principal_a):
    services.counter_propose(principal=principal_a, contract=proposed, terms={"rate": "4.0000"}, expected_round=1)
    services.accept_contract(principal=staff, contract=proposed, expected_round=2)
    proposed.refresh_from_db()
    assert proposed.status == Status.ACCEPTED and proposed.rate == Decimal("4.0000")
    assert proposed.rounds.get(number=3).party == "provider"


def test_counter_proposal_need_name_only_the_changed_terms(proposed, principal_a):
    services.counter_propose(principal=principal_a, contract=proposed, terms={"period_end": ""})
    proposed.refresh_from_db()
    assert proposed.period_end is None and proposed.mode == "all_at_time" and proposed.rate == Decimal("5.0000")
    assert proposed.rounds.get(number=2).terms["period_end"] is None


# --- Turns and double submissions ---------------------------------------------------------------------------------


def test_institution_admin_cannot_accept_its_own_counter_proposal(proposed, principal_a):
    services.counter_propose(principal=principal_a, contract=proposed, terms={"rate": "1.0000"})
    before = state(proposed)
    with pytest.raises(ValidationError) as refused:
        services.accept_contract(principal=principal_a, contract=proposed)
    assert refused.value.code == "not_your_turn"
    assert "provider's turn" in refused.value.messages[0]
    assert state(proposed) == before
    assert Contract.objects.get(pk=proposed.pk).status == Status.COUNTERED


@pytest.mark.parametrize("answer", ["accept", "reject", "counter"])
def test_provider_cannot_answer_its_own_proposal(staff, proposed, answer):
    before = state(proposed)
    with pytest.raises(ValidationError) as refused:
        if answer == "counter":
            services.counter_propose(principal=staff, contract=proposed, terms={"rate": "9.0000"})
        else:
            getattr(services, f"{answer}_contract")(principal=staff, contract=proposed)
    assert refused.value.code == "not_your_turn"
    assert state(proposed) == before


def test_accepting_twice_is_refused_and_changes_nothing(proposed, principal_a):
    services.accept_contract(principal=principal_a, contract=proposed, expected_round=1)
    before = state(proposed)
    for expected in (1, None):  # the same form sent again, and a call that names no round
        with pytest.raises(ValidationError) as refused:
            services.accept_contract(principal=principal_a, contract=proposed, expected_round=expected)
        assert refused.value.code == "not_negotiating"
        assert "already accepted" in refused.value.messages[0]
    assert state(proposed) == before


def test_answering_a_round_that_is_no_longer_the_latest_is_refused(staff, proposed, principal_a):
    services.counter_propose(principal=principal_a, contract=proposed, terms={"rate": "4.0000"}, expected_round=1)
    services.counter_propose(principal=staff, contract=proposed, terms={"rate": "4.8000"}, expected_round=2)
    before = state(proposed)
    # The admin's page still showed round 2 (their own counter); accepting it must not accept round 3's rate unseen.
    with pytest.raises(ValidationError) as refused:
        services.accept_contract(principal=principal_a, contract=proposed, expected_round=2)
    assert refused.value.code == "stale_round"
    assert "round 3" in refused.value.messages[0]
    assert state(proposed) == before


def test_counter_proposal_that_changes_nothing_is_refused(proposed, principal_a):
    before = state(proposed)
    with pytest.raises(ValidationError) as refused:
        services.counter_propose(principal=principal_a, contract=proposed, terms={"rate": "5.0"})
    assert refused.value.code == "nothing_changed"
    assert state(proposed) == before


def test_invalid_counter_proposal_changes_nothing(proposed, principal_a):
    before = state(proposed)
    with pytest.raises(ValidationError) as refused:
        services.counter_propose(principal=principal_a, contract=proposed, terms={"rate": "-1", "mode": "per_patient"})
    assert "rate" in refused.value.message_dict
    assert state(proposed) == before


# --- Reject and terminate: no runs --------------------------------------------------------------------------------


def test_rejected_contract_does_not_run_and_cannot_be_answered_again(proposed, principal_a, staff):
    services.reject_contract(principal=principal_a, contract=proposed, message="Too expensive.")
    proposed.refresh_from_db()
    assert (proposed.status, proposed.awaiting, proposed.runs_allowed) == (Status.REJECTED, "", False)
    assert proposed.rounds.get(number=2).message == "Too expensive."
    before = state(proposed)
    with pytest.raises(ValidationError):
        services.accept_contract(principal=principal_a, contract=proposed)
    with pytest.raises(ValidationError):
        services.terminate_contract(principal=staff, contract=proposed)
    assert state(proposed) == before


@pytest.mark.parametrize("side", ["institution", "provider"])
def test_either_side_terminates_an_accepted_contract_after_which_it_does_not_run(proposed, principal_a, staff, side):
    services.accept_contract(principal=principal_a, contract=proposed)
    services.terminate_contract(principal=principal_a if side == "institution" else staff, contract=proposed, message="Moving on.")
    proposed.refresh_from_db()
    assert proposed.status == Status.TERMINATED and proposed.terminated_at is not None
    assert not proposed.runs_allowed
    last = proposed.rounds.order_by("-number").first()
    assert (last.action, last.party, last.message) == ("terminate", side, "Moving on.")
    assert AuditEvent.objects.filter(action="backup.contract.terminate", object_id=str(proposed.pk)).count() == 1
    before = state(proposed)
    with pytest.raises(ValidationError) as refused:
        services.terminate_contract(principal=staff, contract=proposed)
    assert refused.value.code == "not_accepted"
    assert state(proposed) == before


def test_a_contract_under_negotiation_cannot_be_terminated(proposed, principal_a):
    before = state(proposed)
    with pytest.raises(ValidationError):
        services.terminate_contract(principal=principal_a, contract=proposed)
    assert state(proposed) == before


# --- Who may act --------------------------------------------------------------------------------------------------


def test_only_provider_staff_propose(inst_a, principal_a):
    with pytest.raises(PermissionDenied):
        services.propose_contract(principal=principal_a, institution=inst_a, terms=terms())
    assert not Contract.objects.exists()


def test_operator_command_line_may_propose(inst_a, admin_a):
    contract = services.propose_contract(principal=OPERATOR, institution=inst_a, terms=terms())
    assert contract.rounds.get().user is None


def test_member_without_admin_role_cannot_answer(proposed, clinician_a):
    from tests.factories import principal_of

    before = state(proposed)
    with pytest.raises(PermissionDenied):
        services.accept_contract(principal=principal_of(clinician_a), contract=proposed)
    assert state(proposed) == before


def test_admin_of_another_institution_gets_not_found(proposed, principal_b):
    before = state(proposed)
    for act in (
        lambda: services.accept_contract(principal=principal_b, contract=proposed),
        lambda: services.reject_contract(principal=principal_b, contract=proposed),
        lambda: services.counter_propose(principal=principal_b, contract=proposed, terms={"rate": "1"}),
        lambda: services.terminate_contract(principal=principal_b, contract=proposed),
    ):
        with pytest.raises(Http404):
            act()
    assert state(proposed) == before


def test_suspended_institution_gets_no_proposal(staff, inst_a):
    subscriber_services.set_institution_status(actor=OPERATOR, institution=inst_a, status="suspended")
    with pytest.raises(ValidationError, match="suspended"):
        services.propose_contract(principal=staff, institution=inst_a, terms=terms())
    assert not Contract.objects.exists()


# --- Validation of terms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"period_end": "2020-01-01", "period_start": "2020-06-01"}, "period_end", "must end after it starts"),
        ({"period_end": (timezone.localdate() - timedelta(days=1)).isoformat(), "period_start": "2020-01-01"}, "period_end", "ended on"),
        ({"period_start": ""}, "period_start", "required"),
        ({"rate": "-0.01"}, "rate", "cannot be negative"),
        ({"accounting_points": "-3"}, "accounting_points", "cannot be negative"),
        ({"accounting_points": "ten"}, "accounting_points", "must be a number"),
        ({"rate": "1.123456"}, "rate", "decimal places"),
        ({"rate": "NaN"}, "rate", "finite"),
        ({"schedule_time": ""}, "schedule_time", "needs a schedule time"),
        ({"schedule_time": "", "mode": "per_institution"}, "schedule_time", "needs a schedule time"),
        ({"schedule_time": "25:99"}, "schedule_time", "time of day"),
        ({"mode": "hourly"}, "mode", "Choose a backup mode"),
        ({"target": "archive"}, "target", "not a configured backup target"),
        ({"target": "elsewhere"}, "target", "not a configured backup target"),
        ({"quiet_minutes": 0}, "quiet_minutes", "between 1 and"),
        ({"currency": "euro"}, "currency", "three-letter"),
        ({"coverage": "patients", "coverage_items": []}, "coverage_items", "at least one"),
        ({"coverage": "all", "coverage_items": ["North Wing"]}, "coverage_items", "leave the chosen items empty"),
        ({"coverage": "patients", "coverage_items": ["Doe"]}, "coverage_items", "not a number"),
    ],
)
def test_bad_terms_are_refused_with_a_message_on_the_term_and_nothing_is_created(staff, inst_a, overrides, field, words):
    with pytest.raises(ValidationError) as refused:
        services.propose_contract(principal=staff, institution=inst_a, terms=terms(**overrides))
    messages = refused.value.message_dict[field]
    assert any(words in m for m in messages), messages
    assert not Contract.objects.exists() and not ContractRound.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="backup.contract").exists()


def test_unknown_term_is_refused(staff, inst_a):
    with pytest.raises(ValidationError, match="Unknown contract term"):
        services.propose_contract(principal=staff, institution=inst_a, terms={**terms(), "discount": "50%"})
    assert not Contract.objects.exists()


@pytest.mark.parametrize("mode", ["per_patient", "per_examination"])
def test_modes_without_a_set_time_need_no_schedule(staff, inst_a, mode):
    contract = services.propose_contract(principal=staff, institution=inst_a, terms=terms(mode=mode, schedule_time=""))
    assert contract.schedule_time is None


def test_coverage_of_acquiring_institutions_must_name_sites_in_the_institutions_images(staff, inst_a, inst_b):
    ingest(inst_a, institution_name="North Wing", patient_id="P-1")
    ingest(inst_b, institution_name="South Wing", patient_id="P-2")
    contract = services.propose_contract(
        principal=staff, institution=inst_a, terms=terms(coverage="acquiring_institutions", coverage_items="North Wing\n")
    )
    assert contract.coverage_items == ["North Wing"]
    with pytest.raises(ValidationError) as refused:
        # South Wing exists, but in another institution's images.
        services.propose_contract(
            principal=staff, institution=inst_a, terms=terms(coverage="acquiring_institutions", coverage_items=["South Wing"])
        )
    assert "'South Wing'" in refused.value.message_dict["coverage_items"][0]
    assert Contract.objects.count() == 1


def test_coverage_of_patients_and_studies_takes_only_the_institutions_own(staff, inst_a, inst_b):
    own = ingest(inst_a, patient_id="OWN-1")
    foreign = ingest(inst_b, patient_id="FOREIGN-1")
    contract = services.propose_contract(
        principal=staff, institution=inst_a, terms=terms(coverage="patients", coverage_items=[str(own.study.patient_id)])
    )
    assert contract.coverage_items == [own.study.patient_id]
    contract = services.propose_contract(
        principal=staff, institution=inst_a, terms=terms(coverage="studies", coverage_items=[own.study_id])
    )
    assert contract.coverage_items == [own.study_id]
    for coverage, pk in (("patients", foreign.study.patient_id), ("studies", foreign.study_id)):
        with pytest.raises(ValidationError) as refused:
            services.propose_contract(principal=staff, institution=inst_a, terms=terms(coverage=coverage, coverage_items=[pk]))
        assert f"{pk} is not a" in refused.value.message_dict["coverage_items"][0]
    assert Contract.objects.count() == 2


def test_acceptance_checks_the_terms_again(staff, inst_a, principal_a):
    patient = Patient.objects.create(institution=inst_a, patient_id="GONE-1", patient_name="Gone^Soon")
    contract = services.propose_contract(principal=staff, institution=inst_a, terms=terms(coverage="patients", coverage_items=[patient.pk]))
    patient.delete()
    before = state(contract)
    with pytest.raises(ValidationError) as refused:
        services.accept_contract(principal=principal_a, contract=contract)
    assert "is not a patient of Alpha Hospital" in refused.value.message_dict["coverage_items"][0]
    assert state(contract) == before


def test_typed_terms_from_code_are_accepted_as_well(staff, inst_a):
    import datetime

    today = timezone.localdate()
    contract = services.propose_contract(
        principal=staff,
        institution=inst_a,
        terms=terms(
            schedule_time=datetime.time(3, 30),
            period_start=today,
            period_end=None,
            accounting_points=Decimal("12.5"),
            rate=Decimal("2"),
        ),
    )
    round_ = contract.rounds.get()
    assert round_.terms["schedule_time"] == "03:30" and round_.terms["period_end"] is None
    # Decimals are kept as the contract holds them, so later rounds compare equal to this one.
    assert round_.terms["accounting_points"] == "12.50" and round_.terms["rate"] == "2.0000"
    contract.refresh_from_db()
    assert contract.accounting_points == Decimal("12.50")


# --- Demo data ----------------------------------------------------------------------------------------------------


def test_demo_seed_negotiates_one_accepted_contract_per_institution_and_is_safe_to_rerun(staff_user, inst_a, inst_b, admin_a):
    import io

    from backup.demo import seed_contracts

    out = io.StringIO()
    seeded = seed_contracts(out, {"alpha": inst_a, "beta": inst_b}, staff_user)
    assert [(c.institution, c.mode, c.status, c.runs_allowed) for c in seeded] == [
        (inst_a, "all_at_time", "accepted", True),
        (inst_b, "per_examination", "accepted", True),
    ]
    # Negotiated like any contract: proposed by staff, accepted for the institution (by its admin where it has one).
    assert list(seeded[0].rounds.values_list("action", "party", "user")) == [
        ("propose", "provider", staff_user.pk),
        ("accept", "institution", admin_a.user.pk),
    ]
    assert list(seeded[1].rounds.values_list("action", "party", "user")) == [
        ("propose", "provider", staff_user.pk),
        ("accept", "institution", None),
    ]
    assert seed_contracts(io.StringIO(), [inst_a, inst_b], staff_user) == seeded
    assert Contract.objects.count() == 2


def test_two_accepts_at_the_same_moment_accept_once(transactional_db, proposed, principal_a):
    """Two browser tabs submitting 'accept' together: the row lock (PostgreSQL) or the IMMEDIATE transaction (SQLite)
    serialises them, and the second is told why."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(2)
    outcomes = []

    def accept():
        try:
            barrier.wait(timeout=10)
            services.accept_contract(principal=principal_a, contract=proposed, expected_round=1)
            outcomes.append("accepted")
        except ValidationError as refused:
            outcomes.append(refused.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=accept) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["accepted", "not_negotiating"]
    assert list(proposed.rounds.values_list("action", flat=True)) == ["propose", "accept"]
