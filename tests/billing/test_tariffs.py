"""Tariffs: points and rate per backup mode from a date, validated; a contract keeps the terms it was agreed at."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from backup.models import BackupMode
from billing.models import Tariff
from billing.periods import Period
from billing.services import issue_credit_note, issue_invoice
from billing.tariffs import create_tariff, current_terms, end_tariff
from subscribers.models import AuditEvent
from tests.billing.builders import accepted_contract, at, backup_object

ALL = BackupMode.ALL_AT_TIME
pytestmark = pytest.mark.django_db


def _tariff(operator, **overrides):
    values = {"mode": ALL, "accounting_points": "10", "rate": "2.5", "currency": "EUR", "valid_from": date(2025, 1, 1)}
    values.update(overrides)
    return create_tariff(actor=operator, **values)


def test_staff_add_a_tariff_and_it_is_audited(operator):
    tariff = _tariff(operator, storage_price="0.02", currency="eur")

    assert (tariff.accounting_points, tariff.rate, tariff.currency, tariff.storage_price) == (
        Decimal("10"),
        Decimal("2.5"),
        "EUR",
        Decimal("0.02"),
    )
    event = AuditEvent.objects.get(action="tariff.create")
    assert event.detail["rate"] == "2.5" and event.detail["valid_from"] == "2025-01-01"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate", "0", "The rate must be more than zero"),
        ("rate", "-1.5", "The rate must be more than zero"),
        ("accounting_points", "0", "Accounting points must be more than zero"),
        ("accounting_points", "-3", "Accounting points must be more than zero"),
        ("accounting_points", "abc", "Accounting points must be a number"),
        ("rate", "1.23456", "at most 4 decimal places"),
        ("storage_price", "-0.01", "The storage price cannot be negative"),
        ("currency", "EURO", "three-letter ISO 4217 code"),
        ("mode", "weekly", "Unknown backup mode"),
        ("valid_until", date(2024, 12, 31), r"would end \(2024-12-31\) before it starts"),
    ],
)
def test_bad_tariffs_are_refused_and_nothing_is_saved(operator, field, value, message):
    with pytest.raises(ValidationError, match=message):
        _tariff(operator, **{field: value})
    assert not Tariff.objects.exists()
    assert not AuditEvent.objects.filter(action="tariff.create").exists()


def test_overlapping_dates_for_the_same_mode_are_refused(operator):
    _tariff(operator, valid_from=date(2025, 1, 1), valid_until=date(2025, 6, 30))
    _tariff(operator, valid_from=date(2025, 7, 1))  # follows on: fine
    _tariff(operator, mode=BackupMode.PER_PATIENT, valid_from=date(2025, 3, 1))  # another mode: fine

    for start, end in [(date(2025, 6, 30), date(2025, 6, 30)), (date(2024, 1, 1), None), (date(2026, 1, 1), None)]:
        with pytest.raises(ValidationError, match="overlap the all at a set time tariff from"):
            _tariff(operator, valid_from=start, valid_until=end)
    assert Tariff.objects.count() == 3


def test_only_provider_staff_set_tariffs(principal_a):
    with pytest.raises(PermissionDenied):
        _tariff(principal_a)
    assert not Tariff.objects.exists()


def test_current_terms_pick_the_tariff_of_the_day(operator):
    _tariff(operator, valid_from=date(2025, 1, 1), valid_until=date(2025, 6, 30))
    _tariff(operator, valid_from=date(2025, 7, 1), rate="3.0000")

    assert current_terms(ALL, date(2024, 12, 31)) is None
    assert current_terms(ALL, date(2025, 6, 30)).rate == Decimal("2.5")
    terms = current_terms(ALL, date(2025, 7, 1))
    assert (terms.rate, terms.accounting_points, terms.currency, terms.valid_until) == (Decimal("3"), Decimal("10"), "EUR", None)
    assert current_terms(BackupMode.PER_PATIENT, date(2025, 7, 1)) is None


def test_backup_finds_the_tariff_through_its_own_app_config():
    """backup never imports billing: billing hangs current_terms on the backup app config at start-up."""
    assert apps.get_app_config("backup").tariff_terms is current_terms


def test_ending_a_tariff_lets_the_next_one_follow(operator):
    today = timezone.localdate()
    first = _tariff(operator)

    end_tariff(actor=operator, tariff=first, last_day=today)
    second = _tariff(operator, valid_from=today + timedelta(days=1), rate="4")

    assert current_terms(ALL, today).tariff_id == first.pk
    assert current_terms(ALL, today + timedelta(days=1)).tariff_id == second.pk
    assert AuditEvent.objects.filter(action="tariff.end", object_id=str(first.pk)).exists()


def test_a_tariff_cannot_be_ended_in_the_past(operator):
    first = _tariff(operator)
    with pytest.raises(ValidationError, match="can end yesterday at the earliest"):
        end_tariff(actor=operator, tariff=first, last_day=date(2025, 3, 31))
    assert Tariff.objects.get().valid_until is None


def test_a_tariff_change_after_acceptance_does_not_change_the_contract_or_its_invoice(operator, inst_a):
    _tariff(operator, valid_from=date(2025, 1, 1))
    terms = current_terms(ALL, date(2025, 2, 10))  # what the negotiation proposed and the institution accepted
    contract = accepted_contract(
        inst_a,
        mode=ALL,
        points=terms.accounting_points,
        rate=terms.rate,
        currency=terms.currency,
        period_start=date(2025, 2, 1),
        accepted_at=at(2025, 2, 10),
    )
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))
    march, april = Period(date(2025, 3, 1)), Period(date(2025, 4, 1))
    before, _ = issue_invoice(actor=operator, institution=inst_a, period=march)

    # The provider doubles points and rate from tomorrow.
    today = timezone.localdate()
    end_tariff(actor=operator, tariff=Tariff.objects.get(), last_day=today)
    _tariff(operator, valid_from=today + timedelta(days=1), accounting_points="20", rate="5")
    contract.refresh_from_db()
    april_invoice, _ = issue_invoice(actor=operator, institution=inst_a, period=april)
    issue_credit_note(actor=operator, invoice=before, reason="Re-issue after the tariff change")
    reissued, _ = issue_invoice(actor=operator, institution=inst_a, period=march)

    # 10 points x 2.5 for a whole month, before and after the change: 25.00
    assert (contract.accounting_points, contract.rate) == (Decimal("10.00"), Decimal("2.5000"))
    assert before.total == april_invoice.total == reissued.total == Decimal("25.00")
    assert reissued.revision == 2


def test_a_new_contract_proposal_starts_from_the_tariff_in_force(operator, client, staff_user, inst_a):
    from django.urls import reverse

    from tests.conftest import login

    create_tariff(
        actor=operator,
        mode=ALL,
        accounting_points="7.5",
        rate="3.2500",
        currency="CHF",
        valid_from=date.today() - timedelta(days=30),
    )
    login(client, staff_user)
    body = client.get(reverse("backup-contract-new")).content.decode()
    assert 'value="7.50"' in body or 'value="7.5"' in body
    assert 'value="3.2500"' in body or 'value="3.25"' in body
    assert 'value="CHF"' in body
