"""Processing usage per institution and month (software/usage.py), ready for billing: billable runs (succeeded or partly
succeeded), instances processed and processing time as Decimal, failed runs apart, months in the server's time zone;
the usage page for the institution's admins (their own) and provider staff (all)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from software.models import ProcessingJob
from software.usage import month_bounds, usage_for
from tests.conftest import login

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")


def finished_job(institution, *, processor_id="mip", status="succeeded", finished: datetime, seconds: float, instances: int = 0):
    return ProcessingJob.objects.create(
        institution=institution,
        processor_id=processor_id,
        processor_name={"mip": "Maximum intensity projection", "denoise": "Non-local means denoising"}.get(processor_id, processor_id),
        processor_version="1.0",
        scope="series",
        source_uids=["1.2.3"],
        status=status,
        started_at=finished - timedelta(seconds=seconds),
        finished_at=finished,
        instances_processed=instances,
    )


@pytest.fixture
def november(settings, inst_a, inst_b):
    """Jobs around November 2026 in Berlin time: three billable runs, two not billable, two outside the month, one of
    another institution."""
    settings.TIME_ZONE = "Europe/Berlin"
    at = lambda *args: datetime(*args, tzinfo=BERLIN)  # noqa: E731
    finished_job(inst_a, finished=at(2026, 11, 1, 0, 0, 0), seconds=90.5, instances=8)  # the month's first instant
    finished_job(inst_a, finished=at(2026, 11, 15, 10, 0), seconds=30.25, instances=5)
    finished_job(inst_a, processor_id="denoise", status="partial", finished=at(2026, 11, 20, 9, 0), seconds=10, instances=3)
    finished_job(inst_a, status="failed", finished=at(2026, 11, 21, 9, 0), seconds=400, instances=0)
    finished_job(inst_a, status="cancelled", finished=at(2026, 11, 22, 9, 0), seconds=5, instances=0)
    finished_job(inst_a, finished=at(2026, 12, 1, 0, 30), seconds=60, instances=4)  # 23:30 UTC on 30 November: December here
    finished_job(inst_a, finished=at(2026, 10, 31, 23, 59, 59), seconds=60, instances=4)
    finished_job(inst_b, finished=at(2026, 11, 10, 12, 0), seconds=7, instances=2)
    ProcessingJob.objects.create(  # still running: no usage yet
        institution=inst_a,
        processor_id="mip",
        processor_name="x",
        processor_version="1.0",
        scope="series",
        source_uids=[],
        status="running",
    )


def test_usage_counts_billable_runs_instances_and_time_of_the_month(november, inst_a):
    usage = usage_for(inst_a, 2026, 11)

    assert (usage.runs, usage.failed_runs, usage.instances_processed) == (3, 2, 16)
    assert usage.processing_seconds == Decimal("130.750") and isinstance(usage.processing_seconds, Decimal)
    assert usage.processing_hours == Decimal("0.0363")
    assert [(t.processor_id, t.runs, t.failed_runs, t.instances_processed, t.processing_seconds) for t in usage.by_type] == [
        ("denoise", 1, 0, 3, Decimal("10.000")),
        ("mip", 2, 2, 13, Decimal("120.750")),
    ]


def test_months_follow_the_servers_time_zone(november, inst_a, inst_b):
    assert (usage_for(inst_a, 2026, 12).runs, usage_for(inst_a, 2026, 10).runs) == (1, 1)
    assert usage_for(inst_b, 2026, 11).instances_processed == 2
    start, end = month_bounds(2026, 11)
    assert (start.isoformat(), end.isoformat()) == ("2026-11-01T00:00:00+01:00", "2026-12-01T00:00:00+01:00")
    with pytest.raises(ValueError):
        month_bounds(2026, 13)


def test_a_month_without_processing_is_zero(inst_a):
    usage = usage_for(inst_a, 2025, 2)
    assert (usage.runs, usage.failed_runs, usage.instances_processed, usage.processing_seconds) == (0, 0, 0, Decimal("0.000"))
    assert usage.is_empty and usage.by_type == []


def test_admin_sees_their_institutions_usage_only(client, admin_a, november):
    login(client, admin_a.user)

    page = client.get(reverse("processing-usage"), {"month": "2026-11"}).content.decode()

    assert 'data-testid="usage-alpha"' in page and 'data-testid="usage-beta"' not in page
    assert '<td class="num" data-testid="usage-runs">3</td>' in page
    assert '<td class="num" data-testid="usage-instances">16</td>' in page
    assert '<td class="num" data-testid="usage-hours">0.0363</td>' in page


def test_provider_staff_see_every_institution_with_processing(client, staff_user, november):
    login(client, staff_user)

    page = client.get(reverse("processing-usage"), {"month": "2026-11"}).content.decode()

    assert 'data-testid="usage-alpha"' in page and 'data-testid="usage-beta"' in page


def test_other_admins_do_not_see_an_institutions_usage_and_members_are_refused(client, admin_b, clinician_a, november):
    login(client, admin_b.user)
    page = client.get(reverse("processing-usage"), {"month": "2026-11"}).content.decode()
    assert "Alpha Hospital" not in page and '<td class="num" data-testid="usage-instances">2</td>' in page

    client.logout()
    login(client, clinician_a.user)
    assert client.get(reverse("processing-usage")).status_code == 403


def test_a_month_that_is_not_one_shows_the_current_month(client, admin_a):
    login(client, admin_a.user)
    response = client.get(reverse("processing-usage"), {"month": "2026-13"})
    assert response.status_code == 200
    from django.utils import timezone

    assert f"Processing usage, {timezone.localdate():%Y-%m}" in response.content.decode()
