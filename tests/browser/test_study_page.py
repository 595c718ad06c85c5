"""The study page in a real browser: thumbnails and imaging conditions, the share dialog (with the keyboard), and what
the receiving and a third institution see before and after a revocation."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from playwright.sync_api import expect
from pydicom.uid import generate_uid

from images.ingest import IngestCache, ingest_instance
from images.models import Share
from tests.dicom_files import series
from tests.factories import InstitutionFactory, member

from .conftest import LAPTOP, LOCAL_HOSTS, OffsiteRequests, log_in, screenshot


@pytest.fixture(autouse=True)
def _cache_in_memory(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "browser-study-page"}}
    cache.clear()


@pytest.fixture
def study_a(principal_a):
    """A CT series of 3 and an MR series of 2 (128x128), owned by Alpha Hospital."""
    study_uid = generate_uid()
    ingest_cache = IngestCache()
    blobs = series("CT", 3, study_uid=study_uid, series_number=1, rows=128, cols=128, patient_name="Browser^Bella", patient_id="BR-1")
    blobs += series("MR", 2, study_uid=study_uid, series_number=2, rows=128, cols=128, patient_name="Browser^Bella", patient_id="BR-1")
    instances = [ingest_instance(principal=principal_a, data=data, source="test", cache=ingest_cache).instance for data in blobs]
    return instances[0].study


@pytest.fixture
def other_context(chromium, live_server):
    """A second, fresh browser profile (its own cookies), held to the live server like the first."""
    context = chromium.new_context(base_url=live_server.url, viewport=LAPTOP, locale="en-GB", timezone_id="Europe/Berlin")
    context.set_default_timeout(15_000)
    offsite = OffsiteRequests()

    def guard(route):
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob") or (parts.hostname or "") in LOCAL_HOSTS:
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    yield context
    context.close()
    assert not offsite, f"the page tried to reach beyond the local server: {offsite}"


def study_path(study) -> str:
    return f"/studies/{study.study_instance_uid}/"


def test_study_page_shows_loaded_thumbnails_and_the_imaging_conditions(page, browser_context, live_server, clinician_a, study_a):
    log_in(browser_context, live_server, clinician_a.user)
    response = page.goto(study_path(study_a))
    assert response.status == 200
    expect(page.get_by_test_id("patient-name")).to_contain_text("Browser, Bella")
    thumbnails = page.get_by_test_id("thumbnail")
    expect(thumbnails).to_have_count(2)
    for index in range(2):
        thumbnail = thumbnails.nth(index)
        assert thumbnail.get_attribute("loading") == "lazy"
        thumbnail.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    conditions = page.get_by_test_id("conditions")
    expect(conditions.first).to_contain_text("Peak kilovoltage")
    expect(conditions.first).to_contain_text("120 kV")
    expect(conditions.nth(1)).to_contain_text("Field strength")
    expect(conditions.nth(1)).to_contain_text("3 T")
    expect(page.get_by_test_id("open-viewer")).to_have_attribute("href", f"/viewer/viewer?StudyInstanceUIDs={study_a.study_instance_uid}")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "study-page", full_page=True)
    assert not page.console_errors, page.console_errors


def test_share_through_the_dialog_then_the_receiver_sees_it_until_revoked(
    page, browser_context, other_context, live_server, admin_a, inst_b, study_a
):
    reader_b = member(inst_b, "reader_b", ["receive"])
    log_in(browser_context, live_server, admin_a.user)
    page.goto(study_path(study_a))

    # The dialog opens from the keyboard, is modal, and Escape closes it again.
    dialog = page.locator("#share-dialog")
    expect(dialog).to_be_hidden()
    page.get_by_test_id("open-share").focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    assert dialog.evaluate("d => d.matches(':modal') && d.contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    page.get_by_test_id("open-share").click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Username")).to_be_hidden()  # only the chosen kind of recipient is asked for
    dialog.get_by_label("Institution", exact=True).fill("Beta Clinic")
    screenshot(page, "share-dialog")
    dialog.get_by_role("button", name="Share").click()
    expect(page.locator(".messages")).to_contain_text("now shared with Beta Clinic")
    expect(page.get_by_test_id("share-row")).to_contain_text("Beta Clinic")
    expect(page.get_by_test_id("share-row")).to_contain_text("Active")
    assert Share.objects.filter(study=study_a, with_institution=inst_b, revoked_at__isnull=True).count() == 1

    # The receiver, in a fresh browser, sees the study, marked as shared.
    log_in(other_context, live_server, reader_b.user)
    receiver = other_context.new_page()
    assert receiver.goto(study_path(study_a)).status == 200
    expect(receiver.get_by_test_id("patient-name")).to_contain_text("Browser, Bella")
    expect(receiver.get_by_test_id("shared-by")).to_have_text("Shared by Alpha Hospital")
    expect(receiver.locator("#share-dialog")).to_have_count(0)

    # The owner revokes; the receiver now gets "not found".
    page.get_by_role("button", name="Revoke the share with Beta Clinic").click()
    expect(page.locator(".messages")).to_contain_text("Revoked: Beta Clinic no longer sees this study.")
    expect(page.get_by_test_id("share-row")).to_contain_text("Revoked")
    again = receiver.goto(study_path(study_a))
    assert again.status == 404
    expect(receiver.get_by_role("heading", level=1)).to_contain_text("Not found")
    expect(receiver.locator("body")).not_to_contain_text("Browser, Bella")


def test_a_refused_share_says_why_in_the_dialog(page, browser_context, live_server, admin_a, study_a):
    log_in(browser_context, live_server, admin_a.user)
    page.goto(study_path(study_a))
    page.get_by_test_id("open-share").click()
    dialog = page.locator("#share-dialog")
    dialog.get_by_label("Institution", exact=True).fill("No Such Hospital")
    dialog.get_by_role("button", name="Share").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("No institution is called “No Such Hospital”")
    assert dialog.evaluate("d => d.matches(':modal')")
    assert Share.objects.count() == 0


def test_user_of_a_third_institution_gets_not_found_on_the_study_url(page, browser_context, live_server, study_a):
    third = member(InstitutionFactory(name="Gamma Imaging", slug="gamma"), "gamma_admin")
    log_in(browser_context, live_server, third.user)
    response = page.goto(study_path(study_a))
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_contain_text("Not found")
    expect(page.locator("body")).not_to_contain_text("Browser")
    assert page.goto(f"/studies/{study_a.study_instance_uid}/download.zip").status == 404
