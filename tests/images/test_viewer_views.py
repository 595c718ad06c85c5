"""Serving the installed viewer under /viewer/: logged-in users only, right content types, the precompressed files,
a year of caching for hashed bundles only, index.html for the viewer's own routes, nothing outside its folder."""

from __future__ import annotations

import gzip
import os

import pytest
from django.urls import reverse

from images.viewer import study_viewer_url
from tests.conftest import login

BUNDLE = "app.bundle.0f6159c501addfe9.js"
BUNDLE_TEXT = "console.log('viewer');\n" * 200
INDEX = '<!doctype html><script>window.PUBLIC_URL="/viewer/"</script><div id="root"></div>'


@pytest.fixture
def viewer_root(settings, tmp_path):
    root = tmp_path / "viewer"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / BUNDLE).write_text(BUNDLE_TEXT)
    (root / (BUNDLE + ".gz")).write_bytes(gzip.compress(BUNDLE_TEXT.encode()))
    (root / "app-config.js").write_text("window.config = {};" * 50)
    (root / "app-config.js.gz").write_bytes(gzip.compress(b"window.config = {};" * 50))
    for name in (BUNDLE, "app-config.js"):  # as the installer leaves them: each .gz with its file's time
        os.utime(root / (name + ".gz"), ns=(0, (root / name).stat().st_mtime_ns))
    (root / "app.bundle.css").write_text("body{color:red}")
    (root / "34b1e6b1deb5828e.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "a34f9d1faa5f3315.woff2").write_bytes(b"wOF2")
    (root / "assets" / "favicon.ico").write_bytes(b"\0\0\1\0")
    (root / ".medarchive-installed").write_text("@ohif/app@3.13.2 sha512-x")
    (tmp_path / "secret.txt").write_text("outside the viewer")
    settings.VIEWER_ROOT = root
    return root


@pytest.fixture
def client_clinician(client, clinician_a):
    login(client, clinician_a.user)
    return client


def test_anonymous_visit_to_the_viewer_goes_to_the_login_page(client, viewer_root):
    url = study_viewer_url("1.2.3")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/viewer/viewer%3FStudyInstanceUIDs%3D1.2.3"
    assert client.get(f"/viewer/{BUNDLE}").status_code == 302


@pytest.mark.parametrize("path", ["viewer", "viewer/dicomweb", "segmentation"])
def test_the_viewers_own_routes_answer_its_index_page(client_clinician, viewer_root, path):
    response = client_clinician.get(f"/viewer/{path}", {"StudyInstanceUIDs": "1.2.3"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert b"".join(response.streaming_content).decode() == INDEX
    assert response["Cache-Control"] == "private, no-cache"


def test_the_viewers_root_leads_to_the_portals_worklist(client_clinician, viewer_root):
    response = client_clinician.get("/viewer/")
    assert response.status_code == 302 and response["Location"] == reverse("study-list")


def test_hashed_bundle_is_sent_gzipped_and_cached_for_a_year(client_clinician, viewer_root):
    response = client_clinician.get(f"/viewer/{BUNDLE}", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["Content-Encoding"] == "gzip" and "Accept-Encoding" in response["Vary"]
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    body = b"".join(response.streaming_content)
    assert gzip.decompress(body).decode() == BUNDLE_TEXT
    assert int(response["Content-Length"]) == len(body)


def test_a_file_edited_after_the_install_is_sent_as_edited_not_its_old_gzip(client_clinician, viewer_root):
    config = viewer_root / "app-config.js"
    assert client_clinician.get("/viewer/app-config.js", headers={"Accept-Encoding": "gzip"})["Content-Encoding"] == "gzip"
    config.write_text("window.config = {edited: true};")
    os.utime(config, ns=(0, config.stat().st_mtime_ns + 1_000_000_000))
    response = client_clinician.get("/viewer/app-config.js", headers={"Accept-Encoding": "gzip"})
    body = b"".join(response.streaming_content)
    if response.get("Content-Encoding") == "gzip":  # compressed on the way out by the portal's gzip middleware
        body = gzip.decompress(body)
    assert body == b"window.config = {edited: true};"


def test_a_browser_without_gzip_gets_the_plain_file(client_clinician, viewer_root):
    response = client_clinician.get(f"/viewer/{BUNDLE}", headers={"Accept-Encoding": "identity"})
    assert not response.has_header("Content-Encoding")
    assert b"".join(response.streaming_content).decode() == BUNDLE_TEXT


@pytest.mark.parametrize(
    ("name", "content_type", "cache_control"),
    [
        ("34b1e6b1deb5828e.wasm", "application/wasm", "private, max-age=31536000, immutable"),
        ("a34f9d1faa5f3315.woff2", "font/woff2", "private, max-age=31536000, immutable"),
        ("app.bundle.css", "text/css; charset=utf-8", "private, no-cache"),
        ("assets/favicon.ico", "image/x-icon", "private, no-cache"),
    ],
)
def test_files_have_the_content_type_browsers_need(client_clinician, viewer_root, name, content_type, cache_control):
    response = client_clinician.get(f"/viewer/{name}")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Cache-Control"] == cache_control
    assert b"".join(response.streaming_content) == (viewer_root / name).read_bytes()


def test_an_unchanged_file_is_answered_not_modified(client_clinician, viewer_root):
    first = client_clinician.get("/viewer/app.bundle.css")
    again = client_clinician.get("/viewer/app.bundle.css", headers={"If-None-Match": first["ETag"]})
    assert again.status_code == 304 and again.content == b""
    (viewer_root / "app.bundle.css").write_text("body{color:blue;margin:0}")
    changed = client_clinician.get("/viewer/app.bundle.css", headers={"If-None-Match": first["ETag"]})
    assert changed.status_code == 200 and b"".join(changed.streaming_content) == b"body{color:blue;margin:0}"


@pytest.mark.parametrize(
    "path",
    ["missing.bundle.0123456789abcdef.js", ".medarchive-installed", "assets/../../secret.txt", "%2e%2e/secret.txt", "..%2fsecret.txt"],
)
def test_missing_files_hidden_files_and_paths_outside_the_viewer_are_not_found(client_clinician, viewer_root, path):
    response = client_clinician.get(f"/viewer/{path}")
    assert response.status_code == 404
    assert b"outside the viewer" not in response.content


def test_only_reading_is_allowed(client_clinician, viewer_root):
    assert client_clinician.post("/viewer/index.html").status_code == 405


def test_a_server_without_the_viewer_installed_says_how_to_install_it(client_clinician, settings, tmp_path):
    settings.VIEWER_ROOT = tmp_path / "nothing-here"
    response = client_clinician.get(study_viewer_url("1.2.3"))
    assert response.status_code == 503
    assert "bin/install_viewer" in response.content.decode()
