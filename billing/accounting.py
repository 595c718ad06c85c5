"""Accounting of backup per contract and per object of backup for one billing month (read-only: nothing is saved).

For each object of backup of each contract in force in the month:

    backup amount  = ROUND_HALF_UP(points x rate x days / days-in-month, 0.01)
    storage amount = ROUND_HALF_UP(GB-months x storage price, 0.01)      (only when the contract's tariff has a price)
    line amount    = backup amount + storage amount

`days` counts the calendar days (in settings.TIME_ZONE, both ends included) on which the object was backed up under
the contract: from the latest of the month's first day, the contract's start, its acceptance and the object's
creation, to the earliest of the month's last day, the contract's end, its termination and the object's removal.
Points and rate are the contract's own (agreed at acceptance); later tariff changes never alter them. GB-months are
the bytes of the object's latest verified backup set (as received, 1 GB = 10^9 bytes) x days / days-in-month,
rounded to 4 places. An object with failed backups and no verified backup set in those days is listed with zero.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.core.exceptions import ValidationError
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from backup.models import BackupMode, BackupObject, BackupRun, BackupSet, Contract
from subscribers.models import Institution

from .models import ObjectRemoval
from .periods import Period
from .tariffs import tariff_in_force

CENT = Decimal("0.01")
FOUR_PLACES = Decimal("0.0001")
BYTES_PER_GB = Decimal(10) ** 9
ZERO = Decimal("0.00")
FAILED_SET_STATES = (BackupSet.Status.FAILED, BackupSet.Status.DAMAGED)


def cents(value: Decimal) -> Decimal:
    """The rounding rule of every amount: half up, to the cent."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class ObjectCharge:
    """One line of an invoice: an object of backup in the month."""

    contract: Contract
    backup_object: BackupObject
    start: date
    end: date
    days: int
    days_in_period: int
    accounting_points: Decimal
    rate: Decimal
    gb_months: Decimal
    storage_price: Decimal | None
    backup_amount: Decimal
    storage_amount: Decimal
    note: str = ""

    @property
    def amount(self) -> Decimal:
        return self.backup_amount + self.storage_amount

    @property
    def months(self) -> Decimal:
        return (Decimal(self.days) / Decimal(self.days_in_period)).quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)


@dataclass
class ContractAccount:
    contract: Contract
    start: date
    end: date
    storage_price: Decimal | None
    charges: list[ObjectCharge] = field(default_factory=list)

    @property
    def subtotal(self) -> Decimal:
        return sum((c.amount for c in self.charges), ZERO)


@dataclass
class Statement:
    """What an institution owes for one month, before tax: the accounts of its contracts in force."""

    institution: Institution
    period: Period
    currency: str
    accounts: list[ContractAccount]

    @property
    def subtotal(self) -> Decimal:
        return sum((a.subtotal for a in self.accounts), ZERO)

    @property
    def charges(self) -> list[ObjectCharge]:
        return [c for a in self.accounts for c in a.charges]


def _local_day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def contract_days(contract: Contract) -> tuple[date, date | None] | None:
    """First and last day (None: open) the contract was in force, or None when it was never accepted."""
    if contract.accepted_at is None or contract.status not in (Contract.Status.ACCEPTED, Contract.Status.TERMINATED):
        return None
    start = max(contract.period_start, timezone.localdate(contract.accepted_at))
    ends = [d for d in (contract.period_end,) if d is not None]
    if contract.status == Contract.Status.TERMINATED:
        if contract.terminated_at is None:
            raise ValidationError(f"Contract {contract.pk} is terminated but has no termination time; it cannot be accounted.")
        ends.append(timezone.localdate(contract.terminated_at))
    end = min(ends) if ends else None
    if end is not None and end < start:
        return None
    return start, end


def _clip(period: Period, start: date, end: date | None) -> tuple[date, date] | None:
    first, last = max(period.start, start), min(period.end, end or period.end)
    return (first, last) if first <= last else None


def contracts_in_force(institution: Institution, period: Period) -> list[tuple[Contract, date, date]]:
    """The institution's accepted contracts with at least one day in force in the period, with those days."""
    candidates = Contract.objects.filter(
        institution=institution,
        accepted_at__isnull=False,
        status__in=(Contract.Status.ACCEPTED, Contract.Status.TERMINATED),
        period_start__lte=period.end,
        accepted_at__lt=_local_day_start(period.end + timedelta(days=1)),
    ).order_by("period_start", "pk")
    found = []
    for contract in candidates:
        days = contract_days(contract)
        clipped = days and _clip(period, *days)
        if clipped:
            found.append((contract, *clipped))
    return found


def institutions_with_contracts(period: Period):
    """Institutions that had an accepted contract in force on some day of the period."""
    ids = Contract.objects.filter(
        accepted_at__isnull=False,
        status__in=(Contract.Status.ACCEPTED, Contract.Status.TERMINATED),
        period_start__lte=period.end,
        accepted_at__lt=_local_day_start(period.end + timedelta(days=1)),
    ).values_list("institution_id", flat=True)
    return [i for i in Institution.objects.filter(pk__in=ids).order_by("name") if contracts_in_force(i, period)]


def _failure_note(sets: list, runs: list, first: date, last: date) -> str:
    """Why an object is charged nothing, or "" when backup held in [first, last]."""
    lo, hi = _local_day_start(first), _local_day_start(last + timedelta(days=1))
    in_days = [s for s in sets if lo <= s["created_at"] < hi or (s["verified_at"] and lo <= s["verified_at"] < hi)]
    if any(s["status"] == BackupSet.Status.VERIFIED for s in in_days):
        return ""
    failed_sets = [s for s in in_days if s["status"] in FAILED_SET_STATES]
    if failed_sets:
        last_failed = max(s["created_at"] for s in failed_sets)
        return (
            f"No verified backup in the period: {len(failed_sets)} backup set(s) failed, "
            f"the last on {timezone.localdate(last_failed):%Y-%m-%d}."
        )
    runs_in_days = [r for r in runs if lo <= r["created_at"] < hi]
    failed_runs = [r for r in runs_in_days if r["status"] == BackupRun.Status.FAILED]
    if not in_days and failed_runs and not any(r["status"] == BackupRun.Status.DONE for r in runs_in_days):
        latest = max(failed_runs, key=lambda r: r["created_at"])
        reason = f' ("{latest["message"][:120]}")' if latest["message"] else ""
        return f"No verified backup in the period: all {len(failed_runs)} backup run(s) of the contract failed{reason}."
    return ""


def account_contract(contract: Contract, period: Period, first: date, last: date, storage_price: Decimal | None) -> ContractAccount:
    account = ContractAccount(contract=contract, start=first, end=last, storage_price=storage_price)
    window_end = _local_day_start(last + timedelta(days=1))
    latest_verified = BackupSet.objects.filter(
        backup_object=OuterRef("pk"), status=BackupSet.Status.VERIFIED, created_at__lt=window_end
    ).order_by("-created_at", "-pk")
    objects = (
        BackupObject.objects.filter(contract=contract, created_at__lt=window_end)
        .annotate(stored_bytes=Subquery(latest_verified.values("bytes")[:1]))
        .order_by("kind", "label", "key", "pk")
    )
    removals = {
        r.backup_object_id: timezone.localdate(r.removed_at) for r in ObjectRemoval.objects.filter(backup_object__contract=contract)
    }
    window = {"created_at__gte": _local_day_start(first), "created_at__lt": window_end}
    sets_by_object = defaultdict(list)
    for row in BackupSet.objects.filter(contract=contract, **window).values("backup_object_id", "status", "created_at", "verified_at"):
        sets_by_object[row["backup_object_id"]].append(row)
    runs = list(BackupRun.objects.filter(contract=contract, kind=BackupRun.Kind.BACKUP, **window).values("status", "created_at", "message"))
    points, rate, dim = contract.accounting_points, contract.rate, Decimal(period.days)
    for obj in objects:
        start = max(first, timezone.localdate(obj.created_at))
        end = min(last, removals.get(obj.pk, last))
        if start > end:
            continue
        days = Decimal((end - start).days + 1)
        gb_months = (Decimal(obj.stored_bytes or 0) / BYTES_PER_GB * days / dim).quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)
        note = _failure_note(sets_by_object[obj.pk], runs, start, end)
        if note:
            backup_amount = storage_amount = ZERO
        else:
            # Multiply before dividing, and round once at the end: the exact charge, rounded half up to the cent.
            backup_amount = cents(points * rate * days / dim)
            storage_amount = cents(gb_months * storage_price) if storage_price is not None else ZERO
        account.charges.append(
            ObjectCharge(
                contract=contract,
                backup_object=obj,
                start=start,
                end=end,
                days=int(days),
                days_in_period=period.days,
                accounting_points=points,
                rate=rate,
                gb_months=gb_months,
                storage_price=storage_price,
                backup_amount=backup_amount,
                storage_amount=storage_amount,
                note=note,
            )
        )
    return account


def _storage_price_and_check_currency(contract: Contract) -> Decimal | None:
    """The storage price of the tariff in force when the contract was accepted; refuses a tariff in another currency."""
    agreed_on = timezone.localdate(contract.accepted_at)
    tariff = tariff_in_force(contract.mode, agreed_on)
    if tariff is None:
        return None
    if tariff.currency != contract.currency:
        raise ValidationError(
            f"Currency mismatch: contract {contract.pk} ({contract}) is in {contract.currency}, but the "
            f"{BackupMode(contract.mode).label.lower()} tariff that applied when it was accepted ({agreed_on:%Y-%m-%d}) is in "
            f"{tariff.currency}. Correct the tariff or the contract before invoicing.",
            code="currency_mismatch",
        )
    return tariff.storage_price


def account_institution(institution: Institution, period: Period) -> Statement:
    """The statement of one institution for one month; ValidationError when there is nothing to invoice or it is inconsistent."""
    in_force = contracts_in_force(institution, period)
    if not in_force:
        raise ValidationError(
            f"{institution.name} had no accepted backup contract in force in {period}: there is nothing to invoice.",
            code="no_contract",
        )
    currencies = sorted({contract.currency for contract, _, _ in in_force})
    if len(currencies) > 1:
        raise ValidationError(
            f"Currency mismatch: {institution.name}'s contracts in {period} are in {', '.join(currencies)}; one invoice has one currency.",
            code="currency_mismatch",
        )
    accounts = [
        account_contract(contract, period, first, last, _storage_price_and_check_currency(contract)) for contract, first, last in in_force
    ]
    return Statement(institution=institution, period=period, currency=currencies[0], accounts=accounts)
