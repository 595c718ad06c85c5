"""Usage of the image-processing server per institution and calendar month: runs, instances processed and processing
time, per processing type, ready for billing (Decimal figures, months in settings.TIME_ZONE).

A job counts in the month it finished. Runs that succeeded (wholly or partly) are the billable ones; failed and
cancelled runs are counted apart and never charged. Processing time is the wall time from the job's start to its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone

from subscribers.access import Principal
from subscribers.models import Institution, Role

from .models import ProcessingJob

BILLABLE = (ProcessingJob.Status.SUCCEEDED, ProcessingJob.Status.PARTIAL)
NOT_BILLABLE = (ProcessingJob.Status.FAILED, ProcessingJob.Status.CANCELLED)
SECONDS = Decimal("0.001")
HOURS = Decimal("0.0001")


@dataclass(frozen=True)
class TypeUsage:
    """One processing type's use in the month."""

    processor_id: str
    processor_name: str
    runs: int
    failed_runs: int
    instances_processed: int
    processing_seconds: Decimal

    @property
    def processing_hours(self) -> Decimal:
        return (self.processing_seconds / 3600).quantize(HOURS)


@dataclass(frozen=True)
class Usage:
    """An institution's processing in one month: billable runs, instances and time, and the failed runs apart."""

    institution: Institution
    year: int
    month: int
    runs: int = 0
    failed_runs: int = 0
    instances_processed: int = 0
    processing_seconds: Decimal = Decimal("0.000")
    by_type: list[TypeUsage] = field(default_factory=list)

    @property
    def processing_hours(self) -> Decimal:
        return (self.processing_seconds / 3600).quantize(HOURS)

    @property
    def is_empty(self) -> bool:
        return not (self.runs or self.failed_runs)


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, in the server's time zone; ValueError for a month that is not."""
    if not 1 <= month <= 12 or not 2000 <= year <= 9999:
        raise ValueError(f"{year:04d}-{month:02d} is not a month")
    tz = timezone.get_current_timezone()
    start = timezone.make_aware(datetime(year, month, 1), tz)
    following = datetime(year + (month == 12), month % 12 + 1, 1)
    return start, timezone.make_aware(following, tz)


def _seconds(duration: timedelta | None) -> Decimal:
    if not duration:
        return Decimal("0.000")
    micro = (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds
    return (Decimal(micro) / Decimal(1_000_000)).quantize(SECONDS)


def _rows(year: int, month: int, institutions=None):
    start, end = month_bounds(year, month)
    jobs = ProcessingJob.objects.filter(finished_at__gte=start, finished_at__lt=end, status__in=(*BILLABLE, *NOT_BILLABLE))
    if institutions is not None:
        jobs = jobs.filter(institution__in=institutions)
    billable = Q(status__in=BILLABLE)
    elapsed = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    return (
        jobs.values("institution_id", "processor_id")
        .annotate(
            runs=Count("pk", filter=billable),
            failed_runs=Count("pk", filter=~billable),
            instances=Sum("instances_processed", filter=billable),
            elapsed=Sum(elapsed, filter=billable & Q(started_at__isnull=False)),
        )
        .order_by("institution_id", "processor_id")
    )


def _names(year: int, month: int) -> dict[str, str]:
    start, end = month_bounds(year, month)
    rows = ProcessingJob.objects.filter(finished_at__gte=start, finished_at__lt=end).values_list("processor_id", "processor_name")
    return dict(rows.distinct())


def _assemble(institution: Institution, year: int, month: int, rows: list[dict], names: dict[str, str]) -> Usage:
    by_type = [
        TypeUsage(
            processor_id=row["processor_id"],
            processor_name=names.get(row["processor_id"], row["processor_id"]),
            runs=row["runs"],
            failed_runs=row["failed_runs"],
            instances_processed=row["instances"] or 0,
            processing_seconds=_seconds(row["elapsed"]),
        )
        for row in rows
    ]
    return Usage(
        institution=institution,
        year=year,
        month=month,
        runs=sum(t.runs for t in by_type),
        failed_runs=sum(t.failed_runs for t in by_type),
        instances_processed=sum(t.instances_processed for t in by_type),
        processing_seconds=sum((t.processing_seconds for t in by_type), Decimal("0.000")),
        by_type=by_type,
    )


def usage_for(institution: Institution, year: int, month: int) -> Usage:
    """The institution's processing in the month (billing calls this; figures are Decimal or int)."""
    rows = list(_rows(year, month, [institution]))
    return _assemble(institution, year, month, rows, _names(year, month))


def usage_visible_to(principal: Principal, year: int, month: int) -> list[Usage]:
    """Provider staff: every institution with processing in the month. An institution's admins: their own (also when it
    is empty). Anyone else: nothing."""
    if principal.is_provider_staff:
        institutions = None
    elif principal.institution is not None and principal.has_role(Role.ADMIN):
        institutions = [principal.institution]
    else:
        return []
    rows = list(_rows(year, month, institutions))
    names = _names(year, month)
    grouped: dict[int, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["institution_id"], []).append(row)
    if institutions is None:
        institutions = list(Institution.objects.filter(pk__in=grouped).order_by("name"))
    return [_assemble(inst, year, month, grouped.get(inst.pk, []), names) for inst in institutions]
