"""The terms of a backup contract: parsing, validation against the institution's data, and JSON-safe snapshots.

Terms arrive from portal forms (typed values) or from code and JSON (strings); `clean_terms` turns either into
typed values or raises one ValidationError keyed by term, with messages a person can act on.
"""

from __future__ import annotations

import re
from datetime import date, time
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_time

from images.models import Patient, Series, Study
from subscribers.models import Institution

from ..models import BackupMode, Contract, Coverage

# The order terms are shown and compared in.
TERM_FIELDS = (
    "mode",
    "coverage",
    "coverage_items",
    "schedule_time",
    "quiet_minutes",
    "period_start",
    "period_end",
    "accounting_points",
    "rate",
    "currency",
    "target",
)
TERM_LABELS = {
    "mode": "Backup mode",
    "coverage": "Objects of backup",
    "coverage_items": "Chosen items",
    "schedule_time": "Schedule time",
    "quiet_minutes": "Quiet time (minutes)",
    "period_start": "Period start",
    "period_end": "Period end",
    "accounting_points": "Accounting points",
    "rate": "Rate per point and month",
    "currency": "Currency",
    "target": "Backup target",
}
MODES_WITH_SCHEDULE = (BackupMode.ALL_AT_TIME, BackupMode.PER_INSTITUTION)
# Storage aliases that are never a backup target: the archive itself, uploads and static files.
NOT_TARGETS = {"default", "archive", "staticfiles"}
MAX_QUIET_MINUTES = 7 * 24 * 60
MAX_COVERAGE_ITEMS = 10_000


def backup_targets() -> list[str]:
    """The storage aliases configured as backup targets (settings.STORAGES minus the archive's own)."""
    return sorted(alias for alias in settings.STORAGES if alias not in NOT_TARGETS)


def terms_of(contract: Contract) -> dict:
    return {name: getattr(contract, name) for name in TERM_FIELDS}


def apply_terms(contract: Contract, terms: dict) -> None:
    for name in TERM_FIELDS:
        setattr(contract, name, terms[name])


def snapshot(terms: dict) -> dict:
    """JSON-safe copy of typed terms: Decimals as strings, dates ISO, times HH:MM."""
    out = {}
    for name in TERM_FIELDS:
        value = terms.get(name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, time):
            value = value.strftime("%H:%M")
        elif isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, list | tuple):
            value = list(value)
        out[name] = value
    return out


def changed_terms(before: dict, after: dict) -> list[str]:
    """Names of the terms that differ between two snapshots."""
    return [name for name in TERM_FIELDS if before.get(name) != after.get(name)]


# --- Parsing and validation ------------------------------------------------------------------------


class _Errors(dict):
    def add(self, field: str, message: str, code: str) -> None:
        self.setdefault(field, []).append(ValidationError(message, code=code))


def _parse_decimal(value, label: str, field: str, errors: _Errors) -> Decimal | None:
    if value is None or value == "":
        errors.add(field, f"{label} is required.", "required")
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        errors.add(field, f"{label} must be a number, for example 12.50 (got {value!r}).", "invalid")
        return None
    if not number.is_finite():
        errors.add(field, f"{label} must be a finite number.", "invalid")
        return None
    if number < 0:
        errors.add(field, f"{label} cannot be negative (got {number}).", "negative")
        return None
    model_field = Contract._meta.get_field(field)
    try:
        DecimalValidator(model_field.max_digits, model_field.decimal_places)(number)
    except ValidationError as error:
        for message in error.messages:
            errors.add(field, f"{label}: {message}", "digits")
        return None
    # As the database will hold it, so a snapshot taken now equals one taken after reloading (5.0 == 5.0000).
    return number.quantize(Decimal(1).scaleb(-model_field.decimal_places))


def _parse_date(value, label: str, field: str, errors: _Errors, *, required: bool) -> date | None:
    if value is None or value == "":
        if required:
            errors.add(field, f"{label} is required.", "required")
        return None
    if isinstance(value, date):
        return value
    parsed = None
    try:
        parsed = parse_date(str(value).strip())
    except ValueError:
        pass
    if parsed is None:
        errors.add(field, f"{label} must be a date like 2026-01-31 (got {value!r}).", "invalid")
    return parsed


def _parse_time(value, errors: _Errors) -> time | None:
    if value is None or value == "":
        return None
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    parsed = None
    try:
        parsed = parse_time(str(value).strip())
    except ValueError:
        pass
    if parsed is None:
        errors.add("schedule_time", f"The schedule time must be a time of day like 02:00 (got {value!r}).", "invalid")
        return None
    return parsed.replace(second=0, microsecond=0)


def _parse_items(value, coverage: str, errors: _Errors) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = re.split(r"[\r\n]+", value)
    if not isinstance(value, list | tuple):
        errors.add("coverage_items", "The chosen items must be a list.", "invalid")
        return []
    items = []
    for item in value:
        text = str(item).strip()
        if text and text not in items:
            items.append(text)
    if len(items) > MAX_COVERAGE_ITEMS:
        errors.add("coverage_items", f"At most {MAX_COVERAGE_ITEMS} items can be chosen; cover everything instead.", "too_many")
        return []
    if coverage in (Coverage.PATIENTS, Coverage.STUDIES):
        numbers, bad = [], []
        for text in items:
            (numbers if text.isdigit() else bad).append(text)
        if bad:
            what = "patient" if coverage == Coverage.PATIENTS else "study"
            errors.add(
                "coverage_items",
                f"Chosen {what}s are given by their number in the archive; not a number: {', '.join(bad[:10])}.",
                "invalid",
            )
            return []
        return sorted({int(n) for n in numbers})
    return items


def _check_coverage(institution: Institution, coverage: str, items: list, errors: _Errors) -> None:
    if coverage == Coverage.ALL:
        if items:
            errors.add("coverage_items", "Everything of the institution is covered: leave the chosen items empty.", "items_with_all")
        return
    if not items:
        errors.add("coverage_items", f"Choose at least one item for '{Coverage(coverage).label}'.", "items_required")
        return
    if coverage == Coverage.ACQUIRING_INSTITUTIONS:
        known = set(
            Series.objects.filter(institution=institution, acquiring_institution_name__in=items)
            .values_list("acquiring_institution_name", flat=True)
            .distinct()
        )
        missing = [name for name in items if name not in known]
        if missing:
            errors.add(
                "coverage_items",
                f"No images of {institution.name} name the acquiring institution {', '.join(repr(n) for n in missing[:10])}; "
                f"check the spelling against the InstitutionName of its images.",
                "unknown_acquiring_institution",
            )
    else:
        model, what = (Patient, "patient") if coverage == Coverage.PATIENTS else (Study, "study")
        own = set(model.objects.filter(institution=institution, pk__in=items).values_list("pk", flat=True))
        missing = [str(pk) for pk in items if pk not in own]
        if missing:
            errors.add(
                "coverage_items",
                f"{what.title()} number {', '.join(missing[:10])} is not a {what} of {institution.name}.",
                f"unknown_{what}",
            )


def clean_terms(raw: dict, *, institution: Institution, check_period_not_over: bool = True) -> dict:
    """Typed, validated terms from raw values; ValidationError keyed by term otherwise (nothing is changed)."""
    unknown = sorted(set(raw) - set(TERM_FIELDS))
    if unknown:
        raise ValidationError(f"Unknown contract term(s): {', '.join(unknown)}. Terms are: {', '.join(TERM_FIELDS)}.", code="unknown_term")
    errors = _Errors()
    terms: dict = {}

    mode = raw.get("mode") or ""
    if mode not in BackupMode.values:
        errors.add("mode", f"Choose a backup mode: {', '.join(BackupMode.labels)}.", "invalid_mode")
    terms["mode"] = mode

    coverage = raw.get("coverage") or Coverage.ALL
    if coverage not in Coverage.values:
        errors.add("coverage", f"Choose what is backed up: {', '.join(Coverage.labels)}.", "invalid_coverage")
    terms["coverage"] = coverage
    terms["coverage_items"] = _parse_items(raw.get("coverage_items"), coverage, errors)
    if coverage in Coverage.values and "coverage_items" not in errors:
        _check_coverage(institution, coverage, terms["coverage_items"], errors)

    terms["schedule_time"] = _parse_time(raw.get("schedule_time"), errors)
    if mode in MODES_WITH_SCHEDULE and terms["schedule_time"] is None and "schedule_time" not in errors:
        errors.add("schedule_time", f"'{BackupMode(mode).label}' needs a schedule time, for example 02:00.", "schedule_required")

    quiet = raw.get("quiet_minutes")
    if quiet is None or quiet == "":
        quiet = Contract._meta.get_field("quiet_minutes").default
    try:
        quiet = int(quiet)
    except (TypeError, ValueError):
        errors.add("quiet_minutes", f"The quiet time is a whole number of minutes (got {quiet!r}).", "invalid")
        quiet = None
    if quiet is not None and not 1 <= quiet <= MAX_QUIET_MINUTES:
        errors.add("quiet_minutes", f"The quiet time must be between 1 and {MAX_QUIET_MINUTES} minutes (got {quiet}).", "out_of_range")
    terms["quiet_minutes"] = quiet

    start = _parse_date(raw.get("period_start"), "The period start", "period_start", errors, required=True)
    end = _parse_date(raw.get("period_end"), "The period end", "period_end", errors, required=False)
    if start and end and end <= start:
        errors.add("period_end", f"The period must end after it starts (starts {start:%Y-%m-%d}, ends {end:%Y-%m-%d}).", "end_before_start")
    elif end and check_period_not_over and end < timezone.localdate():
        errors.add("period_end", f"The period ended on {end:%Y-%m-%d}; agree on a period that has not ended yet.", "period_over")
    terms["period_start"], terms["period_end"] = start, end

    terms["accounting_points"] = _parse_decimal(raw.get("accounting_points"), "The accounting points", "accounting_points", errors)
    terms["rate"] = _parse_decimal(raw.get("rate"), "The rate", "rate", errors)

    currency = str(raw.get("currency") or "EUR").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        errors.add("currency", f"The currency is a three-letter ISO 4217 code such as EUR (got {currency!r}).", "invalid_currency")
    terms["currency"] = currency

    target = str(raw.get("target") or "backup").strip()
    if target not in backup_targets():
        configured = ", ".join(backup_targets()) or "none"
        errors.add("target", f"{target!r} is not a configured backup target; configured targets: {configured}.", "unknown_target")
    terms["target"] = target

    if errors:
        raise ValidationError(dict(errors))
    return terms
