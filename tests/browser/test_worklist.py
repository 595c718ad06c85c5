"""The worklist in a real browser: filter by name wildcard and dates, page forwards, backwards and with the back
button, dates in the browser's locale, laptop and tablet widths, and a folder upload that shows up in the list."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import expect
from pydicom.uid import generate_uid

from tests.dicom_files import synth_bytes
from tests.images.test_worklist import make_study

from .conftest import log_in, screenshot

TABLET = {"width": 768, "height": 1024}


def _uids(page) -> list[str]:
    return page.get_by_test_id("worklist-row").evaluate_all("rows => rows.map(r => r.dataset.studyUid)")


@pytest.fixture
def archive(inst_a, inst_b, admin_b):
    """Jane Doe's 40 studies over February and March (several per day), 20 of other patients, one shared in."""
    from images.sharing.services import share
    from tests.factories import principal_of

    for i in range(40):
        make_study(inst_a, patient_name="DOE^JANE", patient_id="PAT-DOE", study_date=date(2026, 2, 1) + timedelta(days=i // 2))
    for i in range(20):
        make_study(inst_a, patient_name=f"ROE^RICHARD{i}", study_date=date(2026, 2, 10), modalities="MR", description="MRI brain")
    shared = make_study(inst_b, patient_name="SHARED^SAM", study_date=date(2026, 3, 1), description="CT from Beta")
    share(principal=principal_of(admin_b), study=shared, with_institution=inst_a)


def test_filter_by_name_wildcard_and_date_range_then_page_forwards_backwards_and_with_the_back_button(
    page, browser_context, live_server, clinician_a, archive
):
    log_in(browser_context, live_server, clinician_a.user)
    page.goto("/")  # the home page of a receiving user is the worklist
    expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
    expect(page.get_by_test_id("worklist-row")).to_have_count(25)
    expect(page.get_by_test_id("shared")).to_have_text("Shared by Beta Clinic")
    screenshot(page, "worklist")

    form = page.get_by_test_id("worklist-filters")
    form.get_by_label("Patient name").fill("d?e^j*")
    form.get_by_label("Study date from").fill("2026-02-05")
    form.get_by_label("Study date to").fill("2026-03-04")
    form.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/studies/\?.*patient_name=d%3Fe%5Ej\*.*date_from=2026-02-05"))
    rows = page.get_by_test_id("worklist-row")
    expect(rows).to_have_count(25)
    expect(page.get_by_test_id("patient-name")).to_have_text(["Doe, Jane"] * 25, ignore_case=True)
    first = _uids(page)
    screenshot(page, "worklist-filtered")

    page.get_by_test_id("next-page").click()
    expect(rows).to_have_count(32 - 25)  # two a day from 5 to 20 February
    second = _uids(page)
    assert not set(first) & set(second)
    dates = page.get_by_test_id("study-date").locator("time").evaluate_all("ts => ts.map(t => t.getAttribute('datetime'))")
    assert all("2026-02-05" <= d <= "2026-03-04" for d in dates)

    page.get_by_test_id("previous-page").click()
    expect(rows).to_have_count(25)
    assert _uids(page) == first
    page.go_back()
    expect(rows).to_have_count(7)
    assert _uids(page) == second
    page.go_back()
    expect(rows).to_have_count(25)
    assert _uids(page) == first
    expect(form.get_by_label("Patient name")).to_have_value("d?e^j*")  # the form shows the list's filters

    form.get_by_label("Patient name").fill("nobody*")
    form.get_by_label("Patient name").press("Enter")
    expect(page.get_by_test_id("worklist-empty")).to_contain_text("No studies match these filters")
    page.get_by_test_id("worklist-empty").get_by_role("link", name="clear filters").click()
    expect(rows).to_have_count(25)
    assert page.console_errors == []


def test_dates_are_shown_in_the_browsers_locale_and_time_zone(page, browser_context, live_server, clinician_a, inst_a):
    make_study(inst_a, patient_name="DATE^DORA", study_date=date(2026, 3, 9))
    log_in(browser_context, live_server, clinician_a.user)
    page.goto("/studies/")
    day = page.get_by_test_id("study-date").locator("time")
    expect(day).to_have_attribute("data-localised", "true")
    expect(day).to_have_text("9 Mar 2026")  # en-GB, and the same calendar day in any time zone
    received = page.get_by_test_id("received")
    expect(received).to_have_attribute("data-localised", "true")
    # en-GB medium date with a short time, in the browser's time zone (Europe/Berlin), not the server's text.
    expect(received).to_have_text(re.compile(r"^\d{1,2} \w{3} \d{4}, \d{2}:\d{2}$"))


def test_the_filter_form_works_from_the_keyboard_and_fits_a_laptop_and_a_tablet(page, browser_context, live_server, clinician_a, archive):
    log_in(browser_context, live_server, clinician_a.user)
    page.goto("/studies/")
    page.get_by_label("Patient name").focus()
    page.keyboard.type("roe")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Patient ID")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("worklist-row")).to_have_count(20)
    for size, name in (({"width": 1366, "height": 768}, "worklist-laptop"), (TABLET, "worklist-tablet")):
        page.set_viewport_size(size)
        screenshot(page, name, full_page=True)
        # Nothing sticks out of the page sideways, and the table fits its frame: no sideways scrolling at all.
        sticking_out = page.evaluate(
            """width => [...document.querySelectorAll("body *")]
                .filter(e => e.getBoundingClientRect().right > width + 0.5)
                .map(e => e.tagName + "." + e.className).slice(0, 5)""",
            size["width"],
        )
        assert sticking_out == [] and page.evaluate("document.documentElement.scrollWidth") <= size["width"]
        assert page.locator(".table-wrap").evaluate("wrap => wrap.scrollWidth <= wrap.clientWidth")
        expect(page.get_by_test_id("open-viewer").first).to_be_visible()


def test_upload_a_folder_from_the_worklist_and_find_its_studies_there(page, browser_context, live_server, admin_a, tmp_path):
    folder = tmp_path / "cd"
    (folder / "DICOM" / "S1").mkdir(parents=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in (1, 2):
        ct = synth_bytes(
            "CT", patient_name="Upload^Ursula", patient_id="UP-1", study_uid=study_uid, series_uid=series_uid, instance_number=number
        )
        (folder / "DICOM" / "S1" / f"IM{number}").write_bytes(ct)
    (folder / "DICOM" / "MR1").write_bytes(synth_bytes("MR", patient_name="Upload^Ulf", patient_id="UP-2"))
    (folder / "README.TXT").write_text("not an image")

    log_in(browser_context, live_server, admin_a.user)
    page.goto("/studies/")
    expect(page.get_by_test_id("worklist-empty")).to_contain_text("No studies yet")
    page.get_by_test_id("upload-link").click()
    expect(page.get_by_role("heading", name="Upload images")).to_be_visible()
    expect(page.locator("#upload-form")).to_have_attribute("data-ready", "true")  # upload.js is deferred
    page.locator("#upload-folder").set_input_files(str(folder))
    expect(page.locator("#upload-overall-text")).to_contain_text("4 of 4 files done", timeout=30_000)
    expect(page.locator("#upload-overall-text")).to_contain_text("3 stored")
    expect(page.locator("#upload-overall-text")).to_contain_text("1 refused")
    screenshot(page, "upload-folder-done")
    page.get_by_test_id("uploaded-in-worklist").click()
    expect(page.get_by_test_id("patient-name")).to_have_count(2)
    assert sorted(page.get_by_test_id("patient-name").all_inner_texts()) == ["Upload, Ulf", "Upload, Ursula"]
    page.get_by_label("Patient name").fill("upload, urs")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("worklist-row")).to_have_count(1)
    expect(page.get_by_test_id("worklist-row")).to_contain_text("1 / 2")
    screenshot(page, "worklist-after-upload")
