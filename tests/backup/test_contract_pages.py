"""The contract pages with the Django test client: provider staff propose and answer, the institution's admin answers,
each sees only what it may, and refusals show a message and change nothing."""

from __future__ import annotations

import re
from decimal import Decimal
from html import unescape

import pytest
from django.utils import timezone

from backup import services
from backup.models import BackupObject, BackupRun, Contract
from images.models import Patient
from subscribers.access import principal_for_user
from tests.backup.test_contracts import state, terms
from tests.conftest import login
from tests.factories import InstitutionFactory, member

LIST = "/backup/contracts/"
NEW = "/backup/contracts/new/"


def page(client, url, **kwargs) -> str:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, (url, response.status_code)
    return unescape(response.content.decode())


def text(html: str) -> str:
    """The visible words of a page, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def detail(contract) -> str:
    return f"/backup/contracts/{contract.pk}/"


def form_post(**overrides) -> dict:
    data = {k: ("\n".join(map(str, v)) if isinstance(v, list) else v) for k, v in terms().items()}
    data["message"] = ""
    return {**data, **overrides}


@pytest.fixture
def staff_client(client, staff_user):
    return login(client, staff_user)


@pytest.fixture
def admin_client(admin_a):
    from django.test import Client

    return login(Client(), admin_a.user)


@pytest.fixture
def proposed(staff_user, inst_a, admin_a):
    return services.propose_contract(
        principal=principal_for_user(staff_user, None), institution=inst_a, terms=terms(), title="Nightly backup", message="Our offer."
    )


# --- Provider staff propose -----------------------------------------------------------------------------------


def test_staff_propose_a_contract_with_the_recommendation_beside_the_form(staff_client, inst_a, admin_a):
    html = page(staff_client, NEW, data={"institution": inst_a.pk})
    assert "Propose a backup contract to Alpha Hospital" in html
    assert 'data-testid="recommendation"' in html and "Recommended: All at a set time" in html
    assert text(html).count(" EUR") >= 4  # a charge for each of the four modes

    response = staff_client.post(NEW, form_post(institution=inst_a.pk, title="Nightly backup", message="Our offer."))
    contract = Contract.objects.get()
    assert response.status_code == 302 and response["Location"] == detail(contract)
    assert (contract.status, contract.awaiting, contract.title) == ("proposed", "institution", "Nightly backup")
    assert contract.rounds.get().message == "Our offer."

    html = page(staff_client, detail(contract))
    assert "Waiting for Alpha Hospital" in html
    assert "Your answer" not in html  # staff cannot answer their own proposal


def test_updating_the_recommendation_creates_nothing(staff_client, inst_a):
    html = unescape(staff_client.post(NEW, form_post(institution=inst_a.pk, recommend="1", mode="per_patient")).content.decode())
    assert "Recommended:" in html and not Contract.objects.exists()


def test_bad_proposal_shows_the_error_on_the_form_and_creates_nothing(staff_client, inst_a):
    response = staff_client.post(
        NEW, form_post(institution=inst_a.pk, period_start="2030-06-01", period_end="2030-01-01", schedule_time="")
    )
    html = unescape(response.content.decode())
    assert response.status_code == 200
    assert "The period must end after it starts" in html
    assert "needs a schedule time" in html
    assert not Contract.objects.exists()


def test_institution_admin_cannot_open_the_proposal_form(admin_client, inst_a):
    assert admin_client.get(NEW).status_code == 403
    assert admin_client.post(NEW, form_post(institution=inst_a.pk)).status_code == 403
    assert not Contract.objects.exists()


# --- The institution's admin answers ---------------------------------------------------------------------------------


def test_admin_sees_the_terms_the_turn_the_history_and_the_answer_form(admin_client, proposed):
    html = page(admin_client, detail(proposed))
    assert "Your turn to answer" in html
    assert 'data-testid="current-terms"' in html and 'data-term="rate">5.0000 EUR' in html
    assert "Round 1" in html and "Proposed by the provider" in text(html) and "Our offer." in html
    assert "Accept these terms" in html and "Reject" in html and "Counter-propose" in html
    assert 'data-testid="recommendation"' in html
    assert 'name="round" value="1"' in html


def test_counter_proposal_form_is_prefilled_with_the_current_terms(admin_client, proposed):
    html = page(admin_client, f"{detail(proposed)}counter/")
    assert re.search(r'name="rate" value="5.0000"', html)
    assert re.search(r'name="schedule_time" value="02:00"', html)
    assert re.search(rf'name="period_start" value="{timezone.localdate():%Y-%m-%d}"', html)
    assert re.search(r'<option value="all_at_time" selected>', html)


def test_admin_counter_proposes_and_the_history_shows_what_changed(admin_client, proposed):
    url = f"{detail(proposed)}counter/"
    response = admin_client.post(url, form_post(rate="4.0000", mode="per_examination", round=1, message="Cheaper, per study."))
    assert response.status_code == 302
    proposed.refresh_from_db()
    assert (proposed.status, proposed.awaiting, proposed.rate, proposed.mode) == (
        "countered",
        "provider",
        Decimal("4.0000"),
        "per_examination",
    )
    html = page(admin_client, detail(proposed))
    assert "Waiting for the provider" in html
    round_2 = html[html.index('data-testid="round-2"') :]
    assert "Counter-proposed" in round_2 and "admin_a" in round_2 and "Cheaper, per study." in round_2
    assert "<del>5.0000 EUR</del>" in round_2 and "<ins>4.0000 EUR</ins>" in round_2
    assert "<del>All at a set time</del>" in round_2 and "<ins>Per examination</ins>" in round_2


def test_admin_cannot_accept_its_own_counter_proposal_in_the_portal(admin_client, proposed):
    admin_client.post(f"{detail(proposed)}counter/", form_post(rate="4.0000", round=1))
    before = state(proposed)
    response = admin_client.post(f"{detail(proposed)}accept/", {"round": 2}, follow=True)
    assert "provider's turn" in unescape(response.content.decode())
    assert state(proposed) == before


def test_invalid_counter_proposal_shows_errors_and_changes_nothing(admin_client, proposed):
    before = state(proposed)
    response = admin_client.post(f"{detail(proposed)}counter/", form_post(rate="-2", coverage="patients", coverage_items="", round=1))
    html = unescape(response.content.decode())
    assert response.status_code == 200
    assert "The rate cannot be negative" in html and "Choose at least one item" in html
    assert state(proposed) == before


def test_staff_accept_the_counter_proposal_and_both_sides_see_accepted_with_the_full_history(staff_client, admin_client, proposed):
    admin_client.post(f"{detail(proposed)}counter/", form_post(rate="4.0000", round=1, message="Cheaper please."))
    html = page(staff_client, detail(proposed))
    assert "Your turn to answer" in html
    response = staff_client.post(f"{detail(proposed)}accept/", {"round": 2, "message": "Deal."})
    assert response.status_code == 302
    for client in (staff_client, admin_client):
        html = page(client, detail(proposed))
        assert 'data-testid="contract-status">Accepted' in html
        assert all(f'data-testid="round-{n}"' in html for n in (1, 2, 3))
        assert "Our offer." in html and "Cheaper please." in html and "Deal." in html
        assert "Terminate the contract" in html and "Your answer" not in html


def test_accepting_twice_in_the_portal_is_refused_clearly(admin_client, proposed):
    assert admin_client.post(f"{detail(proposed)}accept/", {"round": 1}).status_code == 302
    before = state(proposed)
    response = admin_client.post(f"{detail(proposed)}accept/", {"round": 1}, follow=True)
    assert "already accepted" in unescape(response.content.decode())
    assert state(proposed) == before


def test_answering_with_a_page_opened_before_the_other_side_moved_is_refused(admin_client, staff_client, proposed):
    admin_client.post(f"{detail(proposed)}counter/", form_post(rate="4.0000", round=1))
    staff_client.post(f"{detail(proposed)}counter/", form_post(rate="4.5000", round=2))
    before = state(proposed)
    response = admin_client.post(f"{detail(proposed)}accept/", {"round": 2}, follow=True)
    assert "changed since you opened it" in unescape(response.content.decode())
    assert state(proposed) == before


def test_admin_rejects_and_terminates(admin_client, staff_user, inst_a, proposed):
    admin_client.post(f"{detail(proposed)}reject/", {"round": 1, "message": "No thanks."})
    proposed.refresh_from_db()
    assert proposed.status == "rejected" and not proposed.runs_allowed
    assert "no backups run under this contract" in page(admin_client, detail(proposed))

    other = services.propose_contract(principal=principal_for_user(staff_user, None), institution=inst_a, terms=terms())
    admin_client.post(f"{detail(other)}accept/", {"round": 1})
    admin_client.post(f"{detail(other)}terminate/", {"message": "Closing the site."})
    other.refresh_from_db()
    assert other.status == "terminated" and not other.runs_allowed
    assert other.rounds.order_by("-number").first().message == "Closing the site."


def test_answers_need_post(admin_client, proposed):
    assert admin_client.get(f"{detail(proposed)}accept/").status_code == 405
    assert Contract.objects.get(pk=proposed.pk).status == "proposed"


# --- Who sees what ---------------------------------------------------------------------------------------------------


def test_staff_see_every_institutions_contracts_and_an_admin_only_its_own(staff_client, admin_client, proposed, staff_user, inst_b):
    theirs = services.propose_contract(principal=principal_for_user(staff_user, None), institution=inst_b, terms=terms(), title="Beta plan")
    html = page(staff_client, LIST)
    assert "Nightly backup" in html and "Beta plan" in html and "Beta Clinic" in html
    html = page(admin_client, LIST)
    assert "Nightly backup" in html and "Beta plan" not in html
    assert admin_client.get(detail(theirs)).status_code == 404


def test_admin_of_another_institution_gets_404_everywhere_and_changes_nothing(client, admin_b, proposed):
    login(client, admin_b.user)
    before = state(proposed)
    assert client.get(detail(proposed)).status_code == 404
    assert client.get(f"{detail(proposed)}counter/").status_code == 404
    for action in ("accept", "reject", "terminate", "counter"):
        assert client.post(f"{detail(proposed)}{action}/", form_post(round=1)).status_code == 404
    assert state(proposed) == before


def test_member_without_admin_role_gets_403(client, clinician_a, proposed):
    login(client, clinician_a.user)
    assert client.get(LIST).status_code == 403
    assert client.get(detail(proposed)).status_code == 403
    assert client.post(f"{detail(proposed)}accept/", {"round": 1}).status_code == 403
    assert Contract.objects.get(pk=proposed.pk).status == "proposed"


def test_anonymous_caller_is_sent_to_log_in(client, proposed):
    response = client.get(detail(proposed))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_portal_lists_the_contracts_page_for_admins_and_staff(admin_client, staff_client):
    assert 'href="/backup/contracts/"' in page(admin_client, "/manage/members/")
    assert 'href="/backup/contracts/"' in page(staff_client, "/")


def test_contract_list_needs_the_same_queries_for_one_or_many_contracts(staff_client, staff_user, django_assert_max_num_queries):
    staff = principal_for_user(staff_user, None)
    for i in range(2):
        institution = InstitutionFactory(name=f"Site {i}", slug=f"site-{i}")
        member(institution, f"site-admin-{i}")
        services.propose_contract(principal=staff, institution=institution, terms=terms())
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        page(staff_client, LIST)
    for i in range(2, 8):
        institution = InstitutionFactory(name=f"Site {i}", slug=f"site-{i}")
        services.propose_contract(principal=staff, institution=institution, terms=terms())
    with django_assert_max_num_queries(len(few)):
        html = page(staff_client, LIST)
    assert html.count('href="/backup/contracts/') >= 8


# --- Objects of backup and runs ---------------------------------------------------------------------------------------


def test_contract_page_shows_each_object_of_backup_and_the_runs_with_progress(admin_client, staff_client, proposed, inst_a, principal_a):
    patient = Patient.objects.create(institution=inst_a, patient_id="PID-77", patient_name="Doe^Jane")
    services.accept_contract(principal=principal_a, contract=proposed)
    now = timezone.now()
    BackupObject.objects.create(
        contract=proposed, kind="all", key="", label="Everything covered", last_backup_at=now, files=12, bytes=3 * 1024**2
    )
    BackupObject.objects.create(contract=proposed, kind="patient", key=str(patient.pk), label="Jane Doe (PID-77)", patient=patient, files=3)
    BackupRun.objects.create(
        contract=proposed,
        kind="backup",
        status="running",
        files_total=10,
        files_done=4,
        bytes_total=1000,
        bytes_done=250,
        message="Copying",
    )
    html = page(admin_client, detail(proposed))
    objects = html[html.index('data-testid="backup-objects"') :]
    assert "Everything covered" in objects and "12" in objects and "3.0\xa0MB" in objects and "never" in objects
    assert "Jane Doe (PID-77)" in objects
    runs = html[html.index('data-testid="runs"') :]
    assert '<progress max="100" value="25"' in runs and "4 of 10 files" in runs and "Copying" in runs
    # Provider staff watch the backups but do not read patient data: the patient object shows by number.
    html = page(staff_client, detail(proposed))
    assert "Jane Doe" not in html and f"patient {patient.pk}" in html


def test_counter_proposing_out_of_turn_is_refused_on_the_contract_page(admin_client, proposed):
    admin_client.post(f"{detail(proposed)}counter/", form_post(rate="4.0000", round=1))
    before = state(proposed)
    html = page(admin_client, f"{detail(proposed)}counter/")
    assert "It is not your turn" in html and "Send counter-proposal" not in html
    response = admin_client.post(f"{detail(proposed)}counter/", form_post(rate="3.0000", round=2), follow=True)
    assert response.redirect_chain[-1][0] == detail(proposed)
    assert "provider's turn" in unescape(response.content.decode())
    assert state(proposed) == before
