"""Tariffs: what provider staff charge per backup mode from which date, and the terms a new contract starts from.

`current_terms(mode, on_date)` is what the backup negotiation proposes first; billing registers it on the backup
app's config in BillingConfig.ready(), so backup reads it without importing billing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backup.models import BackupMode
from subscribers import audit
from subscribers.access import Principal

from .models import Tariff

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class TariffTerms:
    """The starting proposal for a contract of one mode: points, rate per point and month, currency."""

    mode: str
    accounting_points: Decimal
    rate: Decimal
    currency: str
    storage_price: Decimal | None
    valid_from: date
    valid_until: date | None
    tariff_id: int


def tariff_in_force(mode: str, on_date: date) -> Tariff | None:
    """The tariff of mode that applies on on_date (ranges never overlap, so there is at most one)."""
    return (
        Tariff.objects.filter(mode=mode, valid_from__lte=on_date)
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gte=on_date))
        .order_by("-valid_from")
        .first()
    )


def current_terms(mode: str, on_date: date | None = None) -> TariffTerms | None:
    """The terms of the tariff of mode in force on on_date (default today), or None when none applies."""
    tariff = tariff_in_force(mode, on_date or timezone.localdate())
    if tariff is None:
        return None
    return TariffTerms(
        mode=tariff.mode,
        accounting_points=tariff.accounting_points,
        rate=tariff.rate,
        currency=tariff.currency,
        storage_price=tariff.storage_price,
        valid_from=tariff.valid_from,
        valid_until=tariff.valid_until,
        tariff_id=tariff.pk,
    )


def _decimal(value, label: str, *, places: int, digits: int, positive: bool, code: str) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{label} must be a number, not {value!r}.", code=code) from None
    if not number.is_finite():
        raise ValidationError(f"{label} must be a number, not {value!r}.", code=code)
    if positive and number <= 0:
        raise ValidationError(f"{label} must be more than zero (got {number}).", code=code)
    if not positive and number < 0:
        raise ValidationError(f"{label} cannot be negative (got {number}).", code=code)
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError(f"{label} has at most {places} decimal places (got {number}).", code=code)
    if abs(number) >= Decimal(10) ** (digits - places):
        raise ValidationError(f"{label} is too large (got {number}).", code=code)
    return number


def _overlapping(mode: str, start: date, end: date | None, exclude_pk: int | None = None):
    """Tariffs of mode whose days meet [start, end] (end None: open-ended)."""
    queryset = Tariff.objects.select_for_update().filter(mode=mode).filter(Q(valid_until__isnull=True) | Q(valid_until__gte=start))
    if end is not None:
        queryset = queryset.filter(valid_from__lte=end)
    if exclude_pk is not None:
        queryset = queryset.exclude(pk=exclude_pk)
    return queryset.order_by("valid_from")


def _overlap_error(mode: str, clash: Tariff) -> ValidationError:
    until = f"until {clash.valid_until:%Y-%m-%d}" if clash.valid_until else "open-ended"
    return ValidationError(
        f"The dates overlap the {BackupMode(mode).label.lower()} tariff from {clash.valid_from:%Y-%m-%d} ({until}). "
        "Two tariffs of one mode never apply on the same day: end that one first, or choose other dates.",
        code="tariff_overlap",
    )


@transaction.atomic
def create_tariff(
    *,
    actor: Principal,
    mode: str,
    accounting_points,
    rate,
    currency: str,
    valid_from: date,
    valid_until: date | None = None,
    storage_price=None,
) -> Tariff:
    """Add a tariff of a backup mode; refused (nothing saved) for non-positive points or rate or overlapping dates."""
    actor.require_provider_staff()
    if mode not in BackupMode.values:
        raise ValidationError(f"Unknown backup mode {mode!r}; use one of {', '.join(BackupMode.values)}.", code="bad_mode")
    points = _decimal(accounting_points, "Accounting points", places=2, digits=10, positive=True, code="bad_points")
    rate = _decimal(rate, "The rate", places=4, digits=12, positive=True, code="bad_rate")
    if storage_price not in (None, ""):
        storage_price = _decimal(storage_price, "The storage price", places=4, digits=12, positive=False, code="bad_storage_price")
    else:
        storage_price = None
    currency = (currency or "").strip().upper()
    if not _CURRENCY.match(currency):
        raise ValidationError(f"A currency is a three-letter ISO 4217 code such as EUR, not {currency!r}.", code="bad_currency")
    if not isinstance(valid_from, date):
        raise ValidationError("A tariff needs the date from which it applies.", code="bad_dates")
    if valid_until is not None and valid_until < valid_from:
        raise ValidationError(f"The tariff would end ({valid_until:%Y-%m-%d}) before it starts ({valid_from:%Y-%m-%d}).", code="bad_dates")
    clash = _overlapping(mode, valid_from, valid_until).first()
    if clash is not None:
        raise _overlap_error(mode, clash)
    tariff = Tariff.objects.create(
        mode=mode,
        accounting_points=points,
        rate=rate,
        currency=currency,
        storage_price=storage_price,
        valid_from=valid_from,
        valid_until=valid_until,
        created_by=actor.user,
    )
    audit.record(
        action="tariff.create",
        principal=actor,
        obj=tariff,
        mode=mode,
        accounting_points=str(points),
        rate=str(rate),
        currency=currency,
        storage_price=None if storage_price is None else str(storage_price),
        valid_from=valid_from.isoformat(),
        valid_until=valid_until.isoformat() if valid_until else None,
    )
    return tariff


@transaction.atomic
def end_tariff(*, actor: Principal, tariff: Tariff, last_day: date, today: date | None = None) -> Tariff:
    """Set the last day a tariff applies, so a new one can follow it. Never into the past: what applied, applied."""
    actor.require_provider_staff()
    today = today or timezone.localdate()
    tariff = Tariff.objects.select_for_update().get(pk=tariff.pk)
    if last_day < today - timedelta(days=1):
        raise ValidationError(
            f"A tariff can end yesterday at the earliest ({today - timedelta(days=1):%Y-%m-%d}), not {last_day:%Y-%m-%d}: "
            "days already charged keep the tariff that applied on them.",
            code="end_in_past",
        )
    if last_day < tariff.valid_from:
        raise ValidationError(f"The tariff starts on {tariff.valid_from:%Y-%m-%d}; it cannot end before that.", code="bad_dates")
    if tariff.valid_until is not None and tariff.valid_until <= last_day:
        raise ValidationError(
            f"The tariff already ends on {tariff.valid_until:%Y-%m-%d}; a tariff's end can only be brought forward.", code="bad_dates"
        )
    previous = tariff.valid_until
    tariff.valid_until = last_day
    tariff.save(update_fields=["valid_until"])
    audit.record(
        action="tariff.end",
        principal=actor,
        obj=tariff,
        valid_until=last_day.isoformat(),
        previous_valid_until=previous.isoformat() if previous else None,
    )
    return tariff
