"""Demo billing: a tariff per backup mode, and last month's invoices of demo institutions whose contracts ran then.

`manage.py seed_demo` runs `seed_billing`. Tariffs go through the service as OPERATOR and are audited like any
other; a mode that already has a tariff is left alone, so running it again adds nothing.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError

from backup.models import BackupMode
from subscribers.access import OPERATOR

from .accounting import contracts_in_force
from .models import Tariff
from .periods import last_month
from .services import issue_invoice
from .tariffs import create_tariff

DEMO_TARIFFS_FROM = date(2025, 1, 1)
# Points of one object of backup per month: the finer the unit, the more objects, the fewer points each.
DEMO_TARIFFS = {
    BackupMode.ALL_AT_TIME: (Decimal("10"), None),
    BackupMode.PER_INSTITUTION: (Decimal("4"), None),
    BackupMode.PER_PATIENT: (Decimal("0.05"), None),
    BackupMode.PER_EXAMINATION: (Decimal("0.02"), Decimal("0.0200")),
}
DEMO_RATE = Decimal("5.0000")


def seed_billing(stdout, institutions) -> dict:
    """Create the demo tariffs that are missing; issue last month's invoice of each demo institution that had a contract.

    institutions: a mapping slug -> Institution (or an iterable of them). Returns {"tariffs": [...], "invoices": [...]}.
    """
    tariffs = []
    for mode, (points, storage_price) in DEMO_TARIFFS.items():
        existing = Tariff.objects.filter(mode=mode).order_by("valid_from").first()
        if existing is not None:
            stdout.write(f"{BackupMode(mode).label} already has a tariff ({existing})\n")
            tariffs.append(existing)
            continue
        tariff = create_tariff(
            actor=OPERATOR,
            mode=mode,
            accounting_points=points,
            rate=DEMO_RATE,
            currency=settings.BILLING_CURRENCY,
            storage_price=storage_price,
            valid_from=DEMO_TARIFFS_FROM,
        )
        stdout.write(f"created tariff: {tariff}\n")
        tariffs.append(tariff)
    invoices = []
    period = last_month()
    for institution in institutions.values() if hasattr(institutions, "values") else institutions:
        if not contracts_in_force(institution, period):
            stdout.write(f"{institution.name} had no accepted backup contract in {period}: no invoice\n")
            continue
        try:
            invoice, created = issue_invoice(actor=OPERATOR, institution=institution, period=period)
        except ValidationError as error:
            stdout.write(f"{institution.name}: no invoice for {period}: {' '.join(error.messages)}\n")
            continue
        state = "issued" if created else "already issued"
        stdout.write(f"{state} invoice {invoice.number} for {institution.name}, {period}: {invoice.total} {invoice.currency}\n")
        invoices.append(invoice)
    return {"tariffs": tariffs, "invoices": invoices}
