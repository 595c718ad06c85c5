"""Installing the OHIF viewer: the pinned tarball is checked, dist/ unpacked without what cannot work here, the
root-relative paths of the build moved under /viewer/, and the configuration pointed at the portal's DICOMweb."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from images.viewer import DICOMWEB_ROOT, PORTAL_HOME, VIEWER_PREFIX
from images.viewer_install import InstallError, install, integrity_of, rewrite_css, rewrite_html, rewrite_js, rewrite_json

REPO = Path(settings.BASE_DIR)

# The shape of OHIF 3.13's build, shortened: what index.html, the CSS, the bundles and the manifest carry.
INDEX_HTML = (
    '<!doctype html><html><head><meta name="msapplication-TileImage" content="/assets/mstile-144x144.png">'
    '<script>console.time("scriptToView"),window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<link rel="icon shortcut" href="/assets/favicon.ico"><script rel="preload" as="script" src="/app-config.js"></script>'
    '<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
    '<script defer src="/app.bundle.0f6159c501addfe9.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    '<a href="https://ohif.org/">OHIF</a><script src="//cdn.example.org/x.js"></script></head><body></body></html>'
)
APP_CSS = "@font-face{font-family:Inter;src:url(/a34f9d1faa5f3315.woff2) format('woff2')}.x{background:url('https://example.org/a.png')}"
APP_JS = '(() => {\n/* webpack/runtime/publicPath */\n(() => {\n__webpack_require__.p = "/";\n})();\nconst home = "/";\n})();\n'
MANIFEST = '{"icons": [{"src": "/assets/android-chrome-36x36.png"}], "start_url": "./index.html", "homepage": "https://ohif.org"}'


def test_index_html_paths_and_public_url_move_under_the_prefix():
    html = rewrite_html(INDEX_HTML, "/viewer/")
    assert 'content="/viewer/assets/mstile-144x144.png"' in html
    assert 'href="/viewer/manifest.json"' in html and 'href="/viewer/assets/favicon.ico"' in html
    assert 'src="/viewer/app-config.js"' in html and 'src="/viewer/app.bundle.0f6159c501addfe9.js"' in html
    assert 'href="/viewer/app.bundle.css"' in html
    assert html.count('window.PUBLIC_URL="/viewer/"') == 2 and 'PUBLIC_URL="/"' not in html
    # Absolute and protocol-relative URLs are not paths of the build: left alone.
    assert 'href="https://ohif.org/"' in html and 'src="//cdn.example.org/x.js"' in html


def test_css_font_urls_move_under_the_prefix():
    assert rewrite_css(APP_CSS, "/viewer/") == APP_CSS.replace("url(/a34f", "url(/viewer/a34f")
    assert rewrite_css("a{b:url( '/x.png')}", "/viewer/") == "a{b:url('/viewer/x.png')}"


def test_bundle_public_path_moves_under_the_prefix_and_nothing_else_does():
    js = rewrite_js(APP_JS, "/viewer/")
    assert '__webpack_require__.p = "/viewer/";' in js
    assert 'const home = "/";' in js


def test_manifest_icon_paths_move_under_the_prefix():
    manifest = rewrite_json(MANIFEST, "/viewer/")
    assert '"src": "/viewer/assets/android-chrome-36x36.png"' in manifest
    assert '"start_url": "./index.html"' in manifest and '"homepage": "https://ohif.org"' in manifest


def test_paths_baked_into_the_viewer_are_the_portals_urls():
    assert reverse("viewer", kwargs={"path": ""}) == VIEWER_PREFIX
    assert reverse("dicomweb-studies") == f"{DICOMWEB_ROOT}/studies"
    assert reverse("home") == PORTAL_HOME


# --- Whole installs from a small fake tarball ----------------------------------------------------------------------------


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 499137600  # npm's fixed date, 1985-10-26
            archive.addfile(info, io.BytesIO(data))
    return path


def _ohif_like(tmp_path: Path, **extra: bytes) -> Path:
    big_js = (APP_JS + "const filler = '" + "0123456789" * 2000 + "';\n").encode()
    return _tarball(
        tmp_path / "ohif-app-test.tgz",
        {
            "package/package.json": b'{"name": "@ohif/app"}',
            "package/dist/index.html": INDEX_HTML.encode(),
            "package/dist/app.bundle.0f6159c501addfe9.js": big_js,
            "package/dist/app.bundle.css": APP_CSS.encode(),
            "package/dist/manifest.json": MANIFEST.encode(),
            "package/dist/34b1e6b1deb5828e.wasm": b"\0asm" + bytes(1000),
            "package/dist/assets/favicon.ico": b"\0\0\1\0",
            "package/dist/app-config.js": b"window.config = {dataSources: [{qidoRoot: 'https://d14fa38qiwhyfd.cloudfront.net'}]};",
            "package/dist/ort/ort-wasm-simd.wasm": b"model runtime",
            "package/dist/dicom-microscopy-viewer/dicomMicroscopyViewer.min.js": b"slides",
            "package/dist/app.bundle.0f6159c501addfe9.js.map": b"{}",
            "package/dist/sw.js": b"importScripts('https://storage.googleapis.com/workbox-cdn/x.js')",
            "package/dist/google.js": b"window.config = {oidc: []}",
            "package/dist/_redirects": b"/* /index.html 200",
            **extra,
        },
    )


def test_install_unpacks_dist_without_models_microscopy_source_maps_or_foreign_configuration(tmp_path):
    tarball = _ohif_like(tmp_path)
    target = tmp_path / "viewer"
    started = time.time()
    summary = install(tarball=tarball, integrity=integrity_of(tarball), target=target, prefix="/viewer/")

    installed = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and p.suffix != ".gz")
    assert installed == [
        "34b1e6b1deb5828e.wasm",
        "app-config.js",
        "app.bundle.0f6159c501addfe9.js",
        "app.bundle.css",
        "assets/favicon.ico",
        "index.html",
        "manifest.json",
    ]
    assert summary["files"] == 6  # unpacked; app-config.js is written by the installer
    assert 'window.PUBLIC_URL="/viewer/"' in (target / "index.html").read_text()
    assert '__webpack_require__.p = "/viewer/"' in (target / "app.bundle.0f6159c501addfe9.js").read_text()
    assert "url(/viewer/a34f9d1faa5f3315.woff2)" in (target / "app.bundle.css").read_text()
    # The bundle compresses, and its .gz holds exactly the rewritten bundle.
    bundle = target / "app.bundle.0f6159c501addfe9.js"
    assert gzip.decompress((target / (bundle.name + ".gz")).read_bytes()) == bundle.read_bytes()
    # Files carry the install time, not npm's 1985, so browsers revalidate a changed file of the same name.
    assert (target / "app.bundle.css").stat().st_mtime >= started - 1
    assert not list(tmp_path.glob("viewer.*")), "no staging folder is left behind"


def test_configuration_points_ohif_at_the_portals_dicomweb_and_turns_off_dialog_and_tour(tmp_path):
    tarball = _ohif_like(tmp_path)
    target = tmp_path / "viewer"
    install(tarball=tarball, integrity=integrity_of(tarball), target=target, prefix="/viewer/")
    config = (target / "app-config.js").read_text()
    assert '"dicomweb": "/dicomweb"' in config and "window.location.origin + medarchive.dicomweb" in config
    assert "qidoRoot: dicomweb" in config and "wadoRoot: dicomweb" in config and "wadoUriRoot: dicomweb + '/wado'" in config
    assert '"router_basename": "/viewer"' in config
    assert "investigationalUseDialog: { option: 'never' }" in config and "'ohif.tours': { $set: [] }" in config
    assert "cloudfront" not in config and "https://" not in config


def test_a_new_install_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "viewer"
    target.mkdir()
    (target / "1.bundle.aaaaaaaaaaaaaaaa.js").write_text("old chunk")
    tarball = _ohif_like(tmp_path)
    install(tarball=tarball, integrity=integrity_of(tarball), target=target, prefix="/viewer/")
    assert not (target / "1.bundle.aaaaaaaaaaaaaaaa.js").exists()
    assert (target / "index.html").is_file()


def test_a_build_of_an_unknown_shape_is_refused_and_the_installed_viewer_kept(tmp_path):
    target = tmp_path / "viewer"
    target.mkdir()
    (target / "index.html").write_text("the installed viewer")
    tarball = _ohif_like(tmp_path, **{"package/dist/index.html": b"<html><script src='app.js'></script></html>"})
    with pytest.raises(InstallError, match="PUBLIC_URL"):
        install(tarball=tarball, integrity=integrity_of(tarball), target=target, prefix="/viewer/")
    assert (target / "index.html").read_text() == "the installed viewer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ohif-app-test.tgz", "viewer"]


def test_a_tarball_escaping_its_folder_is_refused(tmp_path):
    tarball = _ohif_like(tmp_path, **{"package/dist/../../../escaped.txt": b"outside"})
    with pytest.raises(tarfile.TarError):
        install(tarball=tarball, integrity=integrity_of(tarball), target=tmp_path / "viewer", prefix="/viewer/")
    assert not (tmp_path.parent.parent / "escaped.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ohif-app-test.tgz"]


# --- bin/install_viewer ------------------------------------------------------------------------------------------------


def _run_installer(*args: str, viewer_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIEWER_DIR": str(viewer_dir)}
    return subprocess.run([str(REPO / "bin" / "install_viewer"), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("kind", ["tarball of a look-alike", "not a tarball"])
def test_install_script_refuses_a_tarball_without_the_pinned_integrity_hash(tmp_path, kind):
    fake = _ohif_like(tmp_path) if kind == "tarball of a look-alike" else tmp_path / "ohif-app-3.13.2.tgz"
    if kind == "not a tarball":
        fake.write_bytes(os.urandom(4096))
    viewer_dir = tmp_path / "installed"
    viewer_dir.mkdir()
    (viewer_dir / "index.html").write_text("the installed viewer")

    result = _run_installer("--tarball", str(fake), viewer_dir=viewer_dir)

    assert result.returncode == 1
    assert "does not have the pinned integrity hash" in result.stderr and integrity_of(fake) in result.stderr
    assert sorted(p.name for p in viewer_dir.iterdir()) == ["index.html"]
    assert (viewer_dir / "index.html").read_text() == "the installed viewer"
    assert not (tmp_path / "installed.new").exists()


# --- The viewer installed on this machine (bin/test installs it before the tests) ------------------------------------------


@pytest.fixture
def installed_viewer() -> Path:
    root = Path(settings.VIEWER_ROOT)
    if not (root / ".medarchive-installed").is_file():
        pytest.fail(f"the viewer is not installed in {root}: run bin/install_viewer (bin/test does)")
    return root


def test_installed_viewer_is_served_from_the_prefix_without_dropped_folders(installed_viewer):
    index = (installed_viewer / "index.html").read_text()
    assert f'window.PUBLIC_URL="{VIEWER_PREFIX}"' in index and 'src="/app' not in index
    assert not (installed_viewer / "ort").exists() and not (installed_viewer / "dicom-microscopy-viewer").exists()
    assert not list(installed_viewer.rglob("*.map"))
    size = sum(p.stat().st_size for p in installed_viewer.rglob("*") if p.is_file() and p.suffix != ".gz")
    assert 30e6 < size < 70e6, f"{size / 1e6:.1f} MB"


def test_second_run_of_the_install_script_returns_at_once(installed_viewer, tmp_path):
    # The stamp alone decides; a copy of it keeps the installed viewer out of reach of this test.
    viewer_dir = tmp_path / "viewer"
    viewer_dir.mkdir()
    shutil.copy(installed_viewer / ".medarchive-installed", viewer_dir)
    started = time.monotonic()
    result = _run_installer(viewer_dir=viewer_dir)
    assert result.returncode == 0 and result.stdout == "", "the installed viewer is not current: run bin/install_viewer"
    assert time.monotonic() - started < 2
