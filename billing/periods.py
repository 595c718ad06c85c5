"""Billing periods: calendar months, written YYYY-MM, with their first and last day and their length in days."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

_PERIOD = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{2})$")


@dataclass(frozen=True, order=True)
class Period:
    """One billing month."""

    start: date

    def __post_init__(self):
        if self.start.day != 1:
            raise ValueError("a billing period starts on the first day of a month")

    @classmethod
    def parse(cls, text: str) -> Period:
        """'2026-03' -> March 2026; anything else is a ValidationError saying what is expected."""
        match = _PERIOD.match((text or "").strip())
        if not match or not 1 <= int(match["month"]) <= 12 or int(match["year"]) < 2000:
            raise ValidationError(f"A billing period is a month written YYYY-MM (e.g. 2026-03), not {text!r}.", code="bad_period")
        return cls(date(int(match["year"]), int(match["month"]), 1))

    @classmethod
    def containing(cls, day: date) -> Period:
        return cls(day.replace(day=1))

    @property
    def days(self) -> int:
        return calendar.monthrange(self.start.year, self.start.month)[1]

    @property
    def end(self) -> date:
        return self.start.replace(day=self.days)

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"

    def previous(self) -> Period:
        return Period.containing(self.start - timedelta(days=1))

    def __str__(self):
        return self.label


def last_month(today: date | None = None) -> Period:
    """The month before the one containing today (in settings.TIME_ZONE): what the monthly run invoices."""
    return Period.containing(today or timezone.localdate()).previous()


def require_ended(period: Period, today: date | None = None) -> None:
    """Invoices are issued for months that are over; a month still running (or to come) is refused."""
    today = today or timezone.localdate()
    if period.end >= today:
        raise ValidationError(
            f"{period} has not ended yet (today is {today:%Y-%m-%d}); invoices are issued once the month is over.",
            code="period_not_ended",
        )
