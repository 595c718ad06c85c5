"""OHIF in a real browser, served by the portal and reading the portal's DICOMweb with the user's session.

The viewer is the one bin/install_viewer installed (bin/test installs it first). A viewport counts as rendered when
cornerstone has fired its image-rendered event for it, holds an image and the loading bar is gone; only then are its
pixels read from a screenshot of its canvas.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import expect

from images.ingest import ingest_instance
from images.viewer import study_viewer_url
from tests.dicom_files import COMPRESSED, bundled_path, series
from tests.factories import TEST_PASSWORD

from .conftest import log_in, screenshot

# Recorded from the first script on, so no render event is missed: cornerstone dispatches them on the viewport element
# without bubbling, which a capturing listener on the document still sees.
RECORD_RENDERS = """
window.__renders = [];
document.addEventListener('CORNERSTONE_IMAGE_RENDERED', (event) => {
  window.__renders.push(event.detail && event.detail.viewportId);
}, true);
"""
VIEWPORT_RENDERED = """(viewportId) => {
  const cs = window.cornerstone;
  const viewport = cs && cs.getRenderingEngines().map((e) => e.getViewport(viewportId)).find(Boolean);
  return Boolean(
    window.__renders.includes(viewportId) && viewport && viewport.getCurrentImageId() && viewport.getImageData()
    && !document.querySelector('.infinite-loading-bar')
  );
}"""
DEFAULT_VIEWPORT = "default"


@pytest.fixture(autouse=True)
def _installed_viewer():
    if not (Path(settings.VIEWER_ROOT) / "index.html").is_file():
        pytest.fail(f"the OHIF viewer is not installed in {settings.VIEWER_ROOT}: run bin/install_viewer (bin/test does)")


@pytest.fixture
def ct_study(principal_a) -> str:
    """A synthesized CT series of 8 slices, 128x128, 1.25 mm apart (a small volume); its Study Instance UID."""
    for data in series("CT", 8, rows=128, cols=128, study_description="Chest CT (viewer test)"):
        instance = ingest_instance(principal=principal_a, data=data, source="test").instance
    return instance.study.study_instance_uid


@pytest.fixture
def ct_small_study(principal_a) -> str:
    """pydicom's CT_small.dcm, a real scanner's CT image (signed 16-bit); its Study Instance UID."""
    instance = ingest_instance(principal=principal_a, path=bundled_path("CT_small.dcm"), source="test").instance
    return instance.study.study_instance_uid


@pytest.fixture
def ct_jpeg2000_study(principal_a) -> str:
    """A CT image stored JPEG 2000 compressed: the viewer decodes it with its WebAssembly codec (loaded from /viewer/)."""
    instance = ingest_instance(principal=principal_a, path=bundled_path(COMPRESSED["jpeg2000_ct"]), source="test").instance
    return instance.study.study_instance_uid


def open_viewer(page, study_uid: str) -> None:
    page.add_init_script(RECORD_RENDERS)
    page.goto(study_viewer_url(study_uid))
    wait_until_rendered(page)


def wait_until_rendered(page, viewport_id: str = DEFAULT_VIEWPORT, *, timeout: int = 30_000) -> None:
    page.wait_for_function(VIEWPORT_RENDERED, arg=viewport_id, timeout=timeout)


def viewport_canvas(page, viewport_id: str = DEFAULT_VIEWPORT):
    return page.locator(f'[data-viewport-uid="{viewport_id}"] canvas.cornerstone-canvas')


def canvas_pixels(page, viewport_id: str = DEFAULT_VIEWPORT) -> Image.Image:
    return Image.open(io.BytesIO(viewport_canvas(page, viewport_id).screenshot())).convert("L")


def assert_shows_an_image(image: Image.Image) -> None:
    low, high = image.getextrema()
    levels = sum(1 for count in image.histogram() if count)
    assert high - low > 100 and levels > 20, f"the viewport is (nearly) one colour: grey levels {low}-{high}, {levels} distinct"


def window_level_overlay(page):
    """The viewport's corner showing the window width and level ("W: 400 L: 40")."""
    return page.locator('[data-cy="viewport-overlay-bottom-left"]')


@pytest.mark.parametrize("study", ["ct_study", "ct_small_study", "ct_jpeg2000_study"])
def test_a_ct_study_opens_in_ohif_and_the_viewport_shows_the_image(page, browser_context, live_server, clinician_a, request, study):
    study_uid = request.getfixturevalue(study)
    log_in(browser_context, live_server, clinician_a.user)
    dicomweb = []
    page.on("response", lambda response: "/dicomweb/" in response.url and dicomweb.append((response.status, response.url)))

    open_viewer(page, study_uid)

    assert_shows_an_image(canvas_pixels(page))
    screenshot(page, f"viewer-{study.replace('_', '-')}")
    # The study browser lists the study's series from the portal's DICOMweb, read with the session cookie.
    expect(page.locator('[data-cy="study-browser-thumbnail"]')).to_have_count(1)
    assert all(status == 200 for status, _ in dicomweb), dicomweb
    assert any(re.search(r"/frames/1$", url) for _, url in dicomweb)
    # No first-visit dialog and no guided tour in the way.
    expect(page.get_by_text("investigational use", exact=False)).to_have_count(0)
    expect(page.locator(".shepherd-element")).to_have_count(0)
    assert not page.console_errors, page.console_errors


def test_dragging_with_the_window_level_tool_changes_the_image(page, browser_context, live_server, clinician_a, ct_study):
    log_in(browser_context, live_server, clinician_a.user)
    open_viewer(page, ct_study)
    initial_window = re.compile(r"W:\s*400\s*L:\s*40\b")  # the synthesized CT's own WindowWidth/WindowCenter
    expect(window_level_overlay(page)).to_contain_text(initial_window)
    before = canvas_pixels(page)
    renders = page.evaluate("window.__renders.length")

    # Window/level is the primary mouse tool of OHIF's basic viewer: drag right (wider) and down (higher level).
    box = viewport_canvas(page).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 80, steps=10)
    page.mouse.up()
    page.wait_for_function("(count) => window.__renders.length > count", arg=renders)
    wait_until_rendered(page)

    expect(window_level_overlay(page)).not_to_contain_text(initial_window)
    after = canvas_pixels(page)
    assert_shows_an_image(after)
    mean_change = ImageStat.Stat(ImageChops.difference(before, after)).mean[0]
    assert mean_change > 5, f"the pixels barely changed: mean difference {mean_change:.1f} grey levels"
    screenshot(page, "viewer-window-level-changed")


def test_the_mpr_layout_renders_three_planes(page, browser_context, live_server, clinician_a, ct_study):
    log_in(browser_context, live_server, clinician_a.user)
    open_viewer(page, ct_study)

    page.locator('[data-cy="Layout"]').click()
    page.get_by_text("MPR", exact=True).click()

    grid = page.locator('[data-cy="viewport-grid"] [data-viewport-uid]')
    expect(grid.locator("canvas.cornerstone-canvas")).to_have_count(3, timeout=30_000)
    ids = grid.evaluate_all("(elements) => elements.map((e) => e.dataset.viewportUid)")
    assert sorted(ids) == ["mpr-axial", "mpr-coronal", "mpr-sagittal"]
    for viewport_id in ids:
        page.wait_for_function(
            """(id) => window.__renders.includes(id) && !document.querySelector('.infinite-loading-bar')""", arg=viewport_id, timeout=30_000
        )
    for viewport_id in ids:
        assert_shows_an_image(canvas_pixels(page, viewport_id))
    screenshot(page, "viewer-mpr")


def test_an_anonymous_visit_goes_to_the_login_page_and_then_to_the_study(page, ct_study, clinician_a):
    page.add_init_script(RECORD_RENDERS)
    page.goto(study_viewer_url(ct_study))

    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/viewer/viewer"))
    expect(page.get_by_label("Password")).to_be_visible()
    screenshot(page, "viewer-anonymous-login")
    page.get_by_label("Username").fill(clinician_a.user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(r"/viewer/viewer\?StudyInstanceUIDs=" + re.escape(ct_study)))
    wait_until_rendered(page)
    assert_shows_an_image(canvas_pixels(page))


def test_another_institution_opening_the_viewer_url_sees_no_study(page, browser_context, live_server, admin_b, ct_study):
    log_in(browser_context, live_server, admin_b.user)
    dicomweb = []

    def record(response):
        if "/dicomweb/" in response.url:
            dicomweb.append((response.status, response.url, response.body() if response.status == 200 else b""))

    page.on("response", record)
    page.goto(study_viewer_url(ct_study))

    expect(page.get_by_text("One or more of the requested studies are not available at this time.")).to_be_visible(timeout=20_000)
    screenshot(page, "viewer-other-institution")
    assert dicomweb, "the viewer asked the portal's DICOMweb"
    for status, url, body in dicomweb:
        assert (status, body) in ((200, b"[]"), (404, b"")), (status, url, body[:200])
    assert not any("/metadata" in url or "/frames/" in url for status, url, _ in dicomweb if status == 200)
    expect(page.locator("canvas.cornerstone-canvas")).to_have_count(0)
    # Nothing of the study's patient (Doe^Jane) shows either.
    expect(page.get_by_text("Doe", exact=False)).to_have_count(0)
