"""Which backup mode suits an institution: a recommendation from its contract period and amount of data.

The facts are the institution's archive now (bytes and instances, patients, studies, distinct acquiring
institutions) and its growth over the last 90 days (from the instances' received_at). Growth is projected over the
contract period. For each of the four modes the estimate shows the data volume to back up in the period, how many
objects of backup and sets that makes, how soon new data is protected, and the charge:

    charge = accounting points of the mode x months of the period x rate, for each object of backup
    (as billing charges it: everything is one object; per institution, patient or examination, each site,
    patient or study is one)

with the proposed terms' points and rate for the proposed mode, and BACKUP_DEFAULT_POINTS for the other modes.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from images.models import Instance, Patient, Series, Study
from subscribers.models import Institution

from .models import BackupMode

# Accounting points of each mode per object of backup and month, when billing has no tariff in force (override
# BACKUP_DEFAULT_POINTS in Django settings). The finer the unit, the more objects, so the fewer points each.
BACKUP_DEFAULT_POINTS = {
    BackupMode.ALL_AT_TIME: Decimal("10"),
    BackupMode.PER_INSTITUTION: Decimal("4"),
    BackupMode.PER_PATIENT: Decimal("0.05"),
    BackupMode.PER_EXAMINATION: Decimal("0.02"),
}
# Price of one point for one month when nothing else was proposed (override BACKUP_DEFAULT_RATE).
BACKUP_DEFAULT_RATE = Decimal("5.00")

GROWTH_WINDOW_DAYS = 90
OPEN_ENDED_MONTHS = 12  # an open-ended contract is estimated per year
SMALL_BYTES = 50 * 1024**3  # by the end of the period
LARGE_BYTES = 1024**4
SLOW_GROWTH = Decimal("0.10")  # at most 10 % more data in 90 days
MANY_PATIENTS = 5000
MANY_SITES = 2
CENT = Decimal("0.01")


def tariff_terms(mode: str):
    """The provider's tariff in force today for mode, from the hook billing sets (backup never imports billing)."""
    from django.apps import apps

    hook = getattr(apps.get_app_config("backup"), "tariff_terms", None)
    return hook(mode, None) if hook is not None else None


def default_points(mode: str) -> Decimal:
    tariff = tariff_terms(mode)
    if tariff is not None:
        return tariff.accounting_points
    table = getattr(settings, "BACKUP_DEFAULT_POINTS", BACKUP_DEFAULT_POINTS)
    return Decimal(str(table[mode]))


def default_rate(mode: str = BackupMode.ALL_AT_TIME) -> Decimal:
    tariff = tariff_terms(mode)
    if tariff is not None:
        return tariff.rate
    return Decimal(str(getattr(settings, "BACKUP_DEFAULT_RATE", BACKUP_DEFAULT_RATE)))


def default_currency(mode: str = BackupMode.ALL_AT_TIME) -> str:
    tariff = tariff_terms(mode)
    return tariff.currency if tariff is not None else "EUR"


# --- The period -------------------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def months_between(start: date, end: date) -> Decimal:
    """Calendar months from start to end inclusive (2026-01-01..2026-12-31 is 12), the rest as a fraction of a month."""
    stop = end + timedelta(days=1)
    months = (stop.year - start.year) * 12 + (stop.month - start.month)
    while months > 0 and add_months(start, months) > stop:
        months -= 1
    anchor = add_months(start, months)
    month_days = (add_months(anchor, 1) - anchor).days
    return (Decimal(months) + Decimal((stop - anchor).days) / Decimal(month_days)).quantize(CENT, ROUND_HALF_UP)


# --- Facts --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFacts:
    instances: int
    bytes: int
    recent_instances: int
    recent_bytes: int
    patients: int
    recent_patients: int
    studies: int
    recent_studies: int
    acquiring_institutions: int
    # Distinct days (and days per patient / per acquiring institution) on which images arrived in the window:
    # how many sets each mode would have written.
    active_days: int
    patient_days: int
    site_days: int

    @property
    def growth_ratio(self) -> Decimal | None:
        """Growth over the window relative to what was there before it; None when everything is new."""
        before = self.bytes - self.recent_bytes
        if before <= 0:
            return None if self.recent_bytes else Decimal(0)
        return Decimal(self.recent_bytes) / Decimal(before)

    @property
    def growth_text(self) -> str:
        ratio = self.growth_ratio
        if ratio is None:
            return f"all of it received in the last {GROWTH_WINDOW_DAYS} days"
        return f"+{(ratio * 100).quantize(Decimal('1'), ROUND_HALF_UP)} % in {GROWTH_WINDOW_DAYS} days"


def facts_of(institution: Institution, *, now: datetime | None = None) -> ArchiveFacts:
    """Counts only (no patient data): what an operator may see of an institution's archive."""
    since = (now or timezone.now()) - timedelta(days=GROWTH_WINDOW_DAYS)
    instances = Instance.objects.filter(institution=institution)
    recent = Q(received_at__gte=since)
    totals = instances.aggregate(
        n=Count("pk"), size=Sum("size_bytes"), recent_n=Count("pk", filter=recent), recent_size=Sum("size_bytes", filter=recent)
    )
    patients = Patient.objects.filter(institution=institution).aggregate(n=Count("pk"), recent=Count("pk", filter=Q(created_at__gte=since)))
    studies = Study.objects.filter(institution=institution).aggregate(n=Count("pk"), recent=Count("pk", filter=Q(received_at__gte=since)))
    sites = (
        Series.objects.filter(institution=institution)
        .exclude(acquiring_institution_name="")
        .values("acquiring_institution_name")
        .distinct()
        .count()
    )
    recent_instances = instances.filter(recent).annotate(day=TruncDate("received_at"))
    return ArchiveFacts(
        instances=totals["n"],
        bytes=totals["size"] or 0,
        recent_instances=totals["recent_n"],
        recent_bytes=totals["recent_size"] or 0,
        patients=patients["n"],
        recent_patients=patients["recent"],
        studies=studies["n"],
        recent_studies=studies["recent"],
        acquiring_institutions=sites,
        active_days=recent_instances.values("day").distinct().count(),
        patient_days=recent_instances.values("day", "study__patient_id").distinct().count(),
        site_days=recent_instances.values("day", "series__acquiring_institution_name").distinct().count(),
    )


# --- Estimates and the recommendation ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeEstimate:
    mode: str
    label: str
    objects: int  # objects of backup by the end of the period
    sets: int  # backup sets written in the period
    volume_bytes: int  # data to back up in the period: what is there now plus the projected growth
    set_bytes: int  # size of a typical set
    protected: str  # how soon new data is in the backup
    points: Decimal
    rate: Decimal
    charge: Decimal
    currency: str
    recommended: bool
    proposed: bool


@dataclass(frozen=True)
class Recommendation:
    mode: str
    reason: str
    facts: ArchiveFacts
    period_start: date
    period_end: date | None
    days: int
    months: Decimal
    growth_bytes: int  # projected new data in the period
    end_bytes: int  # projected size at the end of the period
    estimates: list[ModeEstimate]

    @property
    def mode_label(self) -> str:
        return BackupMode(self.mode).label

    @property
    def period_text(self) -> str:
        if self.period_end is None:
            return f"per year ({self.months} months; the contract is open-ended)"
        return f"{self.period_start:%Y-%m-%d} to {self.period_end:%Y-%m-%d} ({self.months} months)"


def _choose(facts: ArchiveFacts, end_bytes: int) -> tuple[str, str]:
    size = filesizeformat(end_bytes)
    if facts.instances == 0:
        return BackupMode.ALL_AT_TIME, "No images yet: all at a set time is the simplest start; ask again once data arrives."
    ratio = facts.growth_ratio
    if end_bytes < SMALL_BYTES and ratio is not None and ratio <= SLOW_GROWTH:
        return (
            BackupMode.ALL_AT_TIME,
            f"Small ({size} by the end of the period) and slowly growing ({facts.growth_text}): "
            "one set of everything at a set time is the simplest and cheapest.",
        )
    if end_bytes >= LARGE_BYTES or facts.patients >= MANY_PATIENTS:
        return (
            BackupMode.PER_EXAMINATION,
            f"Large ({size} by the end of the period, {facts.patients:,} patients): per-examination increments back up "
            "each study once it is complete, without re-reading the rest of the archive.",
        )
    if facts.acquiring_institutions >= MANY_SITES:
        return (
            BackupMode.PER_INSTITUTION,
            f"Images from {facts.acquiring_institutions} acquiring institutions: one set per institution backs up and "
            "restores each site's data on its own.",
        )
    return (
        BackupMode.PER_PATIENT,
        f"Mid-sized ({size} by the end of the period) and growing ({facts.growth_text}): one set per patient, "
        "written when the patient's data changes, keeps each patient's history together.",
    )


def _decimal(value, fallback: Decimal) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return fallback
    return number if number.is_finite() and number >= 0 else fallback


def recommend(
    *,
    institution: Institution,
    period_start: date,
    period_end: date | None = None,
    terms: dict | None = None,
    facts: ArchiveFacts | None = None,
    now: datetime | None = None,
) -> Recommendation:
    """The recommended mode with a one-line reason, and the estimate of every mode over the period.

    terms (optional, as typed or as strings): the proposed mode, its accounting_points and the rate, schedule_time,
    quiet_minutes and currency; the other modes are priced with BACKUP_DEFAULT_POINTS at the same rate.
    """
    terms = terms or {}
    facts = facts or facts_of(institution, now=now)
    if period_end is not None and period_end >= period_start:
        days = (period_end - period_start).days + 1
        months = months_between(period_start, period_end)
    else:
        period_end = None
        days, months = 365, Decimal(OPEN_ENDED_MONTHS)
    per_day = Decimal(days) / Decimal(GROWTH_WINDOW_DAYS)

    def projected(count: int) -> int:
        return int((Decimal(count) * per_day).to_integral_value(ROUND_HALF_UP))

    growth_bytes = projected(facts.recent_bytes)
    end_bytes = facts.bytes + growth_bytes
    mode, reason = _choose(facts, end_bytes)

    proposed_mode = terms.get("mode") if terms.get("mode") in BackupMode.values else None
    rate = _decimal(terms.get("rate"), default_rate())
    currency = str(terms.get("currency") or "EUR")
    schedule = terms.get("schedule_time")
    at = f" at {schedule:%H:%M}" if hasattr(schedule, "strftime") else (f" at {schedule}" if schedule else "")
    quiet = terms.get("quiet_minutes") or 60

    sites = max(facts.acquiring_institutions, 1)
    units = {
        BackupMode.ALL_AT_TIME: (1, 1 + projected(facts.active_days)),
        BackupMode.PER_INSTITUTION: (sites, sites + projected(facts.site_days)),
        BackupMode.PER_PATIENT: (facts.patients + projected(facts.recent_patients), facts.patients + projected(facts.patient_days)),
        BackupMode.PER_EXAMINATION: (facts.studies + projected(facts.recent_studies), facts.studies + projected(facts.recent_studies)),
    }
    protected = {
        BackupMode.ALL_AT_TIME: f"at the next daily run{at}",
        BackupMode.PER_INSTITUTION: f"at the next daily run{at}, per site",
        BackupMode.PER_PATIENT: "soon after the patient's data changes",
        BackupMode.PER_EXAMINATION: f"once the study is complete ({quiet} min without new images)",
    }
    estimates = []
    for value, label in BackupMode.choices:
        objects, sets = units[value]
        points = default_points(value)
        if value == proposed_mode:
            points = _decimal(terms.get("accounting_points"), points)
        estimates.append(
            ModeEstimate(
                mode=value,
                label=label,
                objects=objects,
                sets=sets if facts.instances else 0,
                volume_bytes=end_bytes,
                set_bytes=end_bytes // max(objects, 1),
                protected=protected[value],
                points=points,
                rate=rate,
                charge=(points * months * rate * max(objects, 1)).quantize(CENT, ROUND_HALF_UP),
                currency=currency,
                recommended=value == mode,
                proposed=value == proposed_mode,
            )
        )
    return Recommendation(
        mode=mode,
        reason=reason,
        facts=facts,
        period_start=period_start,
        period_end=period_end,
        days=days,
        months=months,
        growth_bytes=growth_bytes,
        end_bytes=end_bytes,
        estimates=estimates,
    )
