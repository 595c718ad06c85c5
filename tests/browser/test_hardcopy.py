"""Printing in a real browser: from the study page to the compose page, the server-rendered preview, the PDF download
and a job sent to a hot-folder printer, seen queued in the job list."""

from __future__ import annotations

import subprocess

import pytest
from django.core.cache import cache
from playwright.sync_api import expect
from pydicom.uid import generate_uid

from hardcopy import services
from hardcopy.models import PrintJob
from images.ingest import IngestCache, ingest_instance
from subscribers.access import OPERATOR
from tests.dicom_files import series
from tests.factories import member

from .conftest import log_in, screenshot


@pytest.fixture(autouse=True)
def _cache_in_memory(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "browser-hardcopy"}}
    cache.clear()


@pytest.fixture
def study_a(principal_a):
    """A CT series of 6 and an MR series of 2 (128 x 128), owned by Alpha Hospital."""
    study_uid = generate_uid()
    ingest_cache = IngestCache()
    person = {"patient_name": "Printer^Paula", "patient_id": "PR-1", "rows": 128, "cols": 128}
    blobs = series("CT", 6, study_uid=study_uid, series_number=1, **person) + series(
        "MR", 2, study_uid=study_uid, series_number=2, **person
    )
    instances = [ingest_instance(principal=principal_a, data=data, source="test", cache=ingest_cache).instance for data in blobs]
    return instances[0].study


@pytest.fixture
def print_member(inst_a):
    return member(inst_a, "print_a", ["receive", "print"])


def _page_size_pt(path) -> tuple[float, float]:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    size = next(line for line in out.splitlines() if line.startswith("Page size:")).split(":", 1)[1].split()
    return float(size[0]), float(size[2])


def _choose_format(page, name: str) -> None:
    value = page.locator("#format option", has_text=name).get_attribute("value")
    page.get_by_label("Film format", exact=True).select_option(value)


def _choose_series(page, series_number: int, study) -> None:
    uid = study.series.get(series_number=series_number).series_instance_uid
    page.get_by_label("Series", exact=True).select_option(uid)


def _preview_loaded(page):
    preview = page.get_by_test_id("preview")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    return page.evaluate("img => [img.naturalWidth, img.naturalHeight]", preview.element_handle())


def test_print_member_previews_downloads_and_sends_a_sheet_to_a_printer(
    page, browser_context, live_server, print_member, study_a, tmp_path
):
    printer, _ = services.register_printer(
        actor=OPERATOR, institution=study_a.institution, name="film-room", output="hot_folder", hot_folder=str(tmp_path / "hot")
    )
    log_in(browser_context, live_server, print_member.user)
    assert page.goto(f"/studies/{study_a.study_instance_uid}/").status == 200
    page.get_by_test_id("action-print-compose").click()
    expect(page.get_by_role("heading", name="Print a film sheet")).to_be_visible()
    assert page.url.endswith(f"/hardcopy/compose/{study_a.study_instance_uid}/")

    # The CT series on a 14 x 17 in sheet of 3 x 4: the preview is drawn by the server at 30 dpi.
    _choose_format(page, "CT 3x4 bone window")
    _choose_series(page, 1, study_a)
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("6 image(s) chosen for 12 tiles.")).to_be_visible()
    assert _preview_loaded(page) == [14 * 30, 17 * 30]
    screenshot(page, "hardcopy-compose")

    with page.expect_download() as download_info:
        page.get_by_test_id("print").click()
    download = download_info.value
    assert download.suggested_filename.startswith("print-job-") and download.suggested_filename.endswith(".pdf")
    pdf = tmp_path / download.suggested_filename
    download.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert _page_size_pt(pdf) == pytest.approx((14 * 72, 17 * 72), abs=0.5)
    downloaded = PrintJob.objects.get(device__isnull=True)
    assert downloaded.state == PrintJob.State.PRINTED and len(downloaded.tiles) == 6

    # The MR series on paper (A4, 2 x 2), sent to the hot-folder printer; no agent runs, so it waits in the queue.
    page.goto(f"/hardcopy/compose/{study_a.study_instance_uid}/")
    _choose_format(page, "Paper A4 2x2")
    _choose_series(page, 2, study_a)
    page.get_by_role("button", name="Preview").click()
    width, height = _preview_loaded(page)
    assert (width, height) == (round(210 / 25.4 * 30), round(297 / 25.4 * 30))
    page.get_by_label("Send to", exact=True).select_option(str(printer.pk))
    page.get_by_test_id("print").click()
    expect(page.get_by_role("heading", name="Print jobs of Alpha Hospital")).to_be_visible()
    sent = PrintJob.objects.get(device=printer)
    expect(page.get_by_role("status")).to_have_text(f"Print job {sent.pk} sent to film-room.")
    row = page.get_by_test_id(f"job-{sent.pk}")
    expect(row).to_contain_text("film-room")
    expect(row).to_contain_text("A4, 2x2 · 2 image(s)")
    expect(page.get_by_test_id(f"job-{downloaded.pk}")).to_contain_text("14 x 17 in, 4x3 · 6 image(s)")
    expect(row.locator(".status")).to_have_text("Queued")
    expect(page.get_by_test_id(f"job-{downloaded.pk}").locator(".status")).to_have_text("Printed")
    screenshot(page, "hardcopy-job-list")
    assert not (tmp_path / "hot").exists() or not any((tmp_path / "hot").iterdir())
    assert page.console_errors == []
