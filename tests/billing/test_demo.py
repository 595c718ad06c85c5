"""Demo billing data: tariffs for the four modes, and last month's invoice where a demo contract ran."""

import io
from datetime import timedelta
from decimal import Decimal

from backup.models import BackupMode
from billing.demo import seed_billing
from billing.models import Invoice, Tariff
from billing.periods import last_month
from billing.tariffs import current_terms
from tests.billing.builders import accepted_contract, at, backup_object


def test_seed_billing_creates_a_tariff_per_mode_once(inst_a):
    out = io.StringIO()

    seed_billing(out, {"alpha": inst_a})
    seed_billing(out, {"alpha": inst_a})

    assert Tariff.objects.count() == 4
    assert {t.mode for t in Tariff.objects.all()} == set(BackupMode.values)
    assert current_terms(BackupMode.PER_PATIENT).rate == Decimal("5.0000")
    assert "Alpha Hospital had no accepted backup contract" in out.getvalue()
    assert not Invoice.objects.exists()


def test_seed_billing_invoices_last_month_of_a_contract_that_ran(inst_a):
    start = last_month().start - timedelta(days=10)
    contract = accepted_contract(
        inst_a, mode=BackupMode.ALL_AT_TIME, points="10", rate="5", period_start=start, accepted_at=at(start.year, start.month, start.day)
    )
    backup_object(contract, "Everything", created_at=at(start.year, start.month, start.day, 1))
    out = io.StringIO()

    seeded = seed_billing(out, [inst_a])

    (invoice,) = seeded["invoices"]
    assert invoice.total == Decimal("50.00") and invoice.period_start == last_month().start
    assert f"issued invoice {invoice.number} for Alpha Hospital" in out.getvalue()
