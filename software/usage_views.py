"""The usage page: processing per institution and month, for the institution's admins and provider staff."""

from __future__ import annotations

import re

from django.shortcuts import render
from django.utils import timezone

from subscribers.decorators import admin_required

from .usage import month_bounds, usage_visible_to

MONTH = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{2})$")


def _month(text: str | None) -> tuple[int, int]:
    """The month asked for (YYYY-MM), or the current one for anything else."""
    match = MONTH.match(text or "")
    if match:
        year, month = int(match["year"]), int(match["month"])
        try:
            month_bounds(year, month)
            return year, month
        except ValueError:
            pass
    today = timezone.localdate()
    return today.year, today.month


@admin_required
def usage_page(request):
    year, month = _month(request.GET.get("month"))
    previous = (year - (month == 1), 12 if month == 1 else month - 1)
    following = (year + (month == 12), 1 if month == 12 else month + 1)
    return render(
        request,
        "software/usage.html",
        {
            "usages": usage_visible_to(request.principal, year, month),
            "month": f"{year:04d}-{month:02d}",
            "previous": f"{previous[0]:04d}-{previous[1]:02d}",
            "following": f"{following[0]:04d}-{following[1]:02d}",
        },
    )
