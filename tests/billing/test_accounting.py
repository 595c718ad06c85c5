"""Accounting per contract and per object of backup, checked against totals computed by hand to the cent.

Formula (billing/accounting.py): amount = ROUND_HALF_UP(points x rate x days / days-in-month, 0.01), plus storage
where the contract's tariff prices it. March 2025 has 31 days, February 2024 has 29.
"""

from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from backup.models import BackupMode, BackupRun, BackupSet
from billing.accounting import account_institution
from billing.models import Invoice, InvoiceLine, InvoiceNumberCounter
from billing.periods import Period
from billing.services import issue_invoice, record_object_removal
from billing.tariffs import create_tariff
from tests.billing.builders import accepted_contract, at, backup_object, backup_run, backup_set

MARCH_2025 = Period(date(2025, 3, 1))
FEB_2024 = Period(date(2024, 2, 1))
ISSUED_ON = date(2025, 4, 2)


def _contract(institution, mode, points, rate, **kwargs):
    kwargs.setdefault("period_start", date(2025, 2, 1))
    kwargs.setdefault("accepted_at", at(2025, 2, 10, 9))
    return accepted_contract(institution, mode=mode, points=points, rate=rate, **kwargs)


def _amounts(invoice):
    return {line.object_label: line.amount for line in invoice.lines.order_by("position")}


def _issue(operator, institution, period=MARCH_2025):
    invoice, created = issue_invoice(actor=operator, institution=institution, period=period, today=ISSUED_ON)
    assert created
    return invoice


def test_all_at_a_set_time_full_month(operator, inst_a):
    # 10 points x 2.5000 x 31/31 = 25.00
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5000")
    backup_object(contract, "Everything", created_at=at(2025, 2, 11, 2))

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"Everything": Decimal("25.00")}
    assert invoice.subtotal == invoice.total == Decimal("25.00")
    line = invoice.lines.get()
    assert (line.days, line.days_in_period, line.service_start, line.service_end) == (31, 31, date(2025, 3, 1), date(2025, 3, 31))
    assert (line.mode, line.accounting_points, line.rate) == (BackupMode.ALL_AT_TIME, Decimal("10.00"), Decimal("2.5000"))


def test_per_institution_two_acquiring_sites(operator, inst_a):
    # 4 points x 1.2000 = 4.80 per site for the whole month; two sites: 9.60
    contract = _contract(inst_a, BackupMode.PER_INSTITUTION, "4", "1.2000")
    backup_object(contract, "North Site", created_at=at(2025, 2, 11))
    backup_object(contract, "South Site", created_at=at(2025, 2, 12))

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"North Site": Decimal("4.80"), "South Site": Decimal("4.80")}
    assert invoice.total == Decimal("9.60")


def test_per_patient_rounds_half_up_and_prorates_a_patient_added_mid_month(operator, inst_a):
    # Whole month: 1 x 0.1250 = 0.125 -> 0.13 (half up; half-even would give 0.12).
    # Added 16 March: days 16..31 = 16; 1 x 0.1250 x 16/31 = 0.0645... -> 0.06. Total 0.19.
    contract = _contract(inst_a, BackupMode.PER_PATIENT, "1", "0.1250")
    backup_object(contract, "DOE^JANE (P1)", created_at=at(2025, 2, 20))
    backup_object(contract, "ROE^RICHARD (P2)", created_at=at(2025, 3, 16, 23, 30))

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"DOE^JANE (P1)": Decimal("0.13"), "ROE^RICHARD (P2)": Decimal("0.06")}
    assert invoice.lines.get(object_label="ROE^RICHARD (P2)").days == 16
    assert invoice.total == Decimal("0.19")


def test_per_examination_study_added_mid_month(operator, inst_a):
    # Study of 20 March: days 20..31 = 12; 0.10 x 2.0000 x 12/31 = 0.0774... -> 0.08. Whole month: 0.20. Total 0.28.
    contract = _contract(inst_a, BackupMode.PER_EXAMINATION, "0.10", "2.0000")
    backup_object(contract, "CT CHEST 2025-02-28", created_at=at(2025, 2, 28))
    backup_object(contract, "MR KNEE 2025-03-20", created_at=at(2025, 3, 20, 8))

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"CT CHEST 2025-02-28": Decimal("0.20"), "MR KNEE 2025-03-20": Decimal("0.08")}
    assert invoice.total == Decimal("0.28")


def test_several_objects_in_one_contract_add_up_to_the_contract_subtotal(operator, inst_a):
    # 2.5 points x 3.3333 = 8.33325 a month: whole month -> 8.33; from 11 March (21 days) 174.99825/31 = 5.6451... -> 5.65;
    # from 31 March (1 day) 8.33325/31 = 0.2688... -> 0.27. Subtotal 14.25.
    contract = _contract(inst_a, BackupMode.PER_PATIENT, "2.5", "3.3333")
    backup_object(contract, "A", created_at=at(2025, 1, 5))
    backup_object(contract, "B", created_at=at(2025, 3, 11))
    backup_object(contract, "C", created_at=at(2025, 3, 31, 23, 59))
    backup_object(contract, "D (added in April)", created_at=at(2025, 4, 1))

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"A": Decimal("8.33"), "B": Decimal("5.65"), "C": Decimal("0.27")}
    assert invoice.subtotal == Decimal("14.25")


def test_contract_starting_mid_month_counts_from_its_first_day(operator, inst_a):
    # Period starts 15 March: days 15..31 = 17; 10 x 2.5 x 17/31 = 13.709... -> 13.71
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", period_start=date(2025, 3, 15), accepted_at=at(2025, 3, 14, 16))
    backup_object(contract, "Everything", created_at=at(2025, 3, 14, 17))

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"Everything": Decimal("13.71")}
    assert invoice.lines.get().service_start == date(2025, 3, 15)


def test_only_days_after_acceptance_count(operator, inst_a):
    # Period from 1 March but accepted on 10 March: days 10..31 = 22; 10 x 2.5 x 22/31 = 17.741... -> 17.74
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", period_start=date(2025, 3, 1), accepted_at=at(2025, 3, 10, 11))
    backup_object(contract, "Everything", created_at=at(2025, 3, 1))

    assert _amounts(_issue(operator, inst_a)) == {"Everything": Decimal("17.74")}


def test_terminated_contract_counts_up_to_the_day_of_termination(operator, inst_a):
    # Terminated 20 March: days 1..20; 10 x 2.5 x 20/31 = 16.129... -> 16.13
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", terminated_at=at(2025, 3, 20, 15))
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))

    assert _amounts(_issue(operator, inst_a)) == {"Everything": Decimal("16.13")}


def test_object_removed_mid_month_in_a_leap_february(operator, inst_a):
    # Removed 10 February 2024: days 1..10 of 29; 2 x 1.5 x 10/29 = 1.0344... -> 1.03. The other patient: 3.00.
    contract = _contract(inst_a, BackupMode.PER_PATIENT, "2", "1.5", period_start=date(2024, 1, 1), accepted_at=at(2024, 1, 2))
    removed = backup_object(contract, "Removed patient", created_at=at(2024, 1, 3))
    backup_object(contract, "Staying patient", created_at=at(2024, 1, 3))
    record_object_removal(actor=operator, backup_object=removed, removed_at=at(2024, 2, 10, 12))

    invoice = _issue(operator, inst_a, FEB_2024)

    assert _amounts(invoice) == {"Removed patient": Decimal("1.03"), "Staying patient": Decimal("3.00")}
    assert invoice.lines.get(object_label="Removed patient").service_end == date(2024, 2, 10)


def test_object_removed_before_the_month_is_not_listed(operator, inst_a):
    contract = _contract(inst_a, BackupMode.PER_PATIENT, "2", "1.5")
    gone = backup_object(contract, "Gone in February", created_at=at(2025, 2, 11))
    backup_object(contract, "Staying", created_at=at(2025, 2, 11))
    record_object_removal(actor=operator, backup_object=gone, removed_at=at(2025, 2, 28, 18))

    assert _amounts(_issue(operator, inst_a)) == {"Staying": Decimal("3.00")}


def test_object_whose_backups_all_failed_is_listed_with_zero_and_the_reason(operator, inst_a):
    contract = _contract(inst_a, BackupMode.PER_PATIENT, "2", "1.5")
    failing = backup_object(contract, "Failing patient", created_at=at(2025, 2, 11))
    backup_set(failing, at(2025, 3, 5), BackupSet.Status.FAILED)
    backup_set(failing, at(2025, 3, 12), BackupSet.Status.FAILED)
    healthy = backup_object(contract, "Healthy patient", created_at=at(2025, 2, 11))
    backup_set(healthy, at(2025, 3, 5), BackupSet.Status.FAILED)
    backup_set(healthy, at(2025, 3, 6), BackupSet.Status.VERIFIED)

    invoice = _issue(operator, inst_a)

    assert _amounts(invoice) == {"Failing patient": Decimal("0.00"), "Healthy patient": Decimal("3.00")}
    failed_line = invoice.lines.get(object_label="Failing patient")
    assert "No verified backup in the period" in failed_line.note
    assert "2 backup set(s) failed, the last on 2025-03-12" in failed_line.note
    assert invoice.lines.get(object_label="Healthy patient").note == ""


def test_object_is_zero_when_every_run_of_the_contract_failed_before_writing_a_set(operator, inst_a):
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5")
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))
    backup_run(contract, at(2025, 3, 2, 2), BackupRun.Status.FAILED, "The backup store is full (0 bytes free).")
    backup_run(contract, at(2025, 3, 3, 2), BackupRun.Status.FAILED, "The backup store is full (0 bytes free).")

    line = _issue(operator, inst_a).lines.get()

    assert line.amount == Decimal("0.00")
    assert "all 2 backup run(s) of the contract failed" in line.note
    assert "The backup store is full" in line.note


def test_object_without_new_sets_in_a_quiet_month_is_charged(operator, inst_a):
    # Nothing changed in March, so nothing ran: the January backup still holds, and backup continued.
    contract = _contract(inst_a, BackupMode.PER_EXAMINATION, "1", "1")
    backup_object(contract, "CT 2025-01", created_at=at(2025, 1, 20), verified_bytes=10**9)

    assert _amounts(_issue(operator, inst_a)) == {"CT 2025-01": Decimal("1.00")}


def test_storage_is_shown_as_information_and_not_charged_without_a_price(operator, inst_a):
    create_tariff(
        actor=operator, mode=BackupMode.ALL_AT_TIME, accounting_points="10", rate="2.5", currency="EUR", valid_from=date(2025, 1, 1)
    )
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", period_start=date(2025, 3, 15), accepted_at=at(2025, 3, 1))
    backup_object(contract, "Everything", created_at=at(2025, 3, 1), verified_bytes=150 * 10**9)

    line = _issue(operator, inst_a).lines.get()

    # 150 GB x 17/31 = 82.2580... GB-months, shown to 4 places; not charged.
    assert line.gb_months == Decimal("82.2581")
    assert (line.storage_price, line.storage_amount, line.amount) == (None, Decimal("0.00"), Decimal("13.71"))


def test_storage_is_charged_when_the_tariff_of_the_contract_prices_it(operator, inst_a):
    create_tariff(
        actor=operator,
        mode=BackupMode.ALL_AT_TIME,
        accounting_points="10",
        rate="2.5",
        currency="EUR",
        storage_price="0.0200",
        valid_from=date(2025, 1, 1),
    )
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", period_start=date(2025, 3, 15), accepted_at=at(2025, 3, 1))
    backup_object(contract, "Everything", created_at=at(2025, 3, 1), verified_bytes=150 * 10**9)

    line = _issue(operator, inst_a).lines.get()

    # Storage: 82.2581 GB-months x 0.0200 = 1.645162 -> 1.65; backup 13.71; line 15.36.
    assert (line.backup_amount, line.storage_amount, line.amount) == (Decimal("13.71"), Decimal("1.65"), Decimal("15.36"))


def test_tax_from_settings_is_added_to_the_subtotal(operator, inst_a, settings):
    settings.BILLING_TAX_RATE = Decimal("19")
    settings.BILLING_PAYMENT_DAYS = 14
    contract = _contract(inst_a, BackupMode.PER_PATIENT, "1", "0.1250")
    backup_object(contract, "P1", created_at=at(2025, 2, 20))
    backup_object(contract, "P2", created_at=at(2025, 3, 16))

    invoice = _issue(operator, inst_a)

    # Subtotal 0.19; tax 19 % = 0.0361 -> 0.04; total 0.23. Due 14 days after 2 April.
    assert (invoice.subtotal, invoice.tax_rate, invoice.tax_amount, invoice.total) == (
        Decimal("0.19"),
        Decimal("19.00"),
        Decimal("0.04"),
        Decimal("0.23"),
    )
    assert invoice.due_date == date(2025, 4, 16)


def test_several_contracts_get_one_invoice_with_a_subtotal_each(operator, inst_a):
    first = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", title="Nightly full backup")
    backup_object(first, "Everything", created_at=at(2025, 2, 11))
    second = _contract(inst_a, BackupMode.PER_EXAMINATION, "0.10", "2.0000", title="Per study")
    backup_object(second, "CT", created_at=at(2025, 2, 28))

    statement = account_institution(inst_a, MARCH_2025)

    assert [(a.contract.title, a.subtotal) for a in statement.accounts] == [
        ("Nightly full backup", Decimal("25.00")),
        ("Per study", Decimal("0.20")),
    ]
    assert statement.subtotal == Decimal("25.20")


# --- Refusals: nothing is issued, no number is used --------------------------------------------------------------


def _nothing_issued():
    assert not Invoice.objects.exists()
    assert not InvoiceLine.objects.exists()
    assert not InvoiceNumberCounter.objects.filter(last_number__gt=0).exists()


def test_a_month_without_an_accepted_contract_is_refused(operator, inst_a):
    accepted_contract(inst_a, mode=BackupMode.ALL_AT_TIME, points=10, rate=2, period_start=date(2025, 4, 1), accepted_at=at(2025, 3, 28))
    proposed = _contract(inst_a, BackupMode.PER_PATIENT, "1", "1")
    proposed.status, proposed.accepted_at = proposed.Status.PROPOSED, None
    proposed.save()

    with pytest.raises(ValidationError, match="no accepted backup contract in force in 2025-03"):
        issue_invoice(actor=operator, institution=inst_a, period=MARCH_2025, today=ISSUED_ON)
    _nothing_issued()


def test_a_month_that_has_not_ended_is_refused(operator, inst_a):
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5")
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))

    with pytest.raises(ValidationError, match="2025-03 has not ended yet"):
        issue_invoice(actor=operator, institution=inst_a, period=MARCH_2025, today=date(2025, 3, 31))
    _nothing_issued()


def test_currency_mismatch_between_tariff_and_contract_is_refused(operator, inst_a):
    create_tariff(
        actor=operator, mode=BackupMode.ALL_AT_TIME, accounting_points="10", rate="2.5", currency="EUR", valid_from=date(2025, 1, 1)
    )
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", currency="USD")
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))

    with pytest.raises(ValidationError, match="Currency mismatch: contract .* is in USD, but the all at a set time tariff .* is in EUR"):
        issue_invoice(actor=operator, institution=inst_a, period=MARCH_2025, today=ISSUED_ON)
    _nothing_issued()


def test_contracts_in_two_currencies_cannot_share_an_invoice(operator, inst_a):
    backup_object(_contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5", currency="EUR"), "E", created_at=at(2025, 2, 11))
    backup_object(_contract(inst_a, BackupMode.PER_PATIENT, "1", "1", currency="CHF"), "C", created_at=at(2025, 2, 11))

    with pytest.raises(ValidationError, match="are in CHF, EUR; one invoice has one currency"):
        issue_invoice(actor=operator, institution=inst_a, period=MARCH_2025, today=ISSUED_ON)
    _nothing_issued()


def test_institution_admins_cannot_issue_invoices(principal_a, inst_a):
    contract = _contract(inst_a, BackupMode.ALL_AT_TIME, "10", "2.5")
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))

    with pytest.raises(PermissionDenied, match="provider staff"):
        issue_invoice(actor=principal_a, institution=inst_a, period=MARCH_2025, today=ISSUED_ON)
    _nothing_issued()
