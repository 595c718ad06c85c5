"""Gapless invoice numbers: PREFIX-YEAR-NNNNNN, one sequence per prefix and year of issue.

The counter row is locked (SELECT ... FOR UPDATE) by the transaction that issues, so two issuing transactions
take turns; a transaction that fails rolls its increment back with everything else, so no number is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from .models import InvoiceNumberCounter


@dataclass(frozen=True)
class InvoiceNumber:
    prefix: str
    year: int
    sequence: int

    def __str__(self):
        return f"{self.prefix}-{self.year}-{self.sequence:06d}"


def prefix() -> str:
    return settings.BILLING_INVOICE_PREFIX


def lock_counter(year: int) -> InvoiceNumberCounter:
    """The counter of this year, locked until the surrounding transaction ends (call inside transaction.atomic)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("invoice numbers are allocated inside the transaction that issues the invoice")
    InvoiceNumberCounter.objects.get_or_create(prefix=prefix(), year=year)
    return InvoiceNumberCounter.objects.select_for_update().get(prefix=prefix(), year=year)


def allocate(counter: InvoiceNumberCounter) -> InvoiceNumber:
    """The next number of a locked counter."""
    counter.last_number += 1
    counter.save(update_fields=["last_number"])
    return InvoiceNumber(counter.prefix, counter.year, counter.last_number)
