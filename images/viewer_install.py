"""Install-time work on the OHIF viewer tarball (run by bin/install_viewer): check it, unpack it, serve it under a prefix.

The npm package @ohif/app ships a complete prebuilt viewer in `package/dist/`, built to be served from `/`. This module
checks the tarball against the integrity hash recorded in bin/install_viewer, unpacks `dist/` without what cannot or
need not work here (AI models, slide microscopy, source maps, a service worker fetching from a CDN, other hosts'
configuration), rewrites the root-relative paths baked into it to the portal's prefix, writes OHIF's configuration
(`app-config.js`: the portal's own DICOMweb, nothing from the internet), gzips what compresses and swaps the result
into place, so a failure at any step leaves the installed viewer as it was. Standard library and whitenoise only:
no Django settings are needed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path, PurePosixPath

from whitenoise.compress import Compressor

from .viewer import DICOMWEB_ROOT, PORTAL_HOME, VIEWER_PREFIX

DIST = "package/dist/"
# Folders and files of dist/ that are not installed: the ONNX runtime and AI segmentation models (~136 MB, fetched
# models that cannot work offline), the slide microscopy viewer (~20 MB), source maps, the unused service worker (it
# imports workbox from a CDN), the alternative Google Cloud configuration, and configuration for other web hosts.
DROPPED_FOLDERS = frozenset({"ort", "dicom-microscopy-viewer"})
DROPPED_FILES = frozenset({"sw.js", "google.js", "_headers", "_redirects", "serve.json", "app-config.js"})
DROPPED_SUFFIXES = (".map",)


class InstallError(Exception):
    """The tarball is refused or does not have the shape this installer knows; nothing was changed."""


# --- The tarball -------------------------------------------------------------------------------------------------------


def integrity_of(path: Path) -> str:
    """The npm integrity string (Subresource Integrity form, `sha512-<base64>`) of a file."""
    digest = hashlib.sha512()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def verify_integrity(path: Path, expected: str) -> None:
    if not expected.startswith("sha512-"):
        raise InstallError(f"the expected integrity {expected!r} is not a sha512- integrity string")
    actual = integrity_of(path)
    if actual != expected:
        raise InstallError(f"{path} does not have the pinned integrity hash: expected {expected}, got {actual}; refusing to install it")


def is_dropped(relative: PurePosixPath) -> bool:
    return (
        relative.parts[0] in DROPPED_FOLDERS
        or (len(relative.parts) == 1 and relative.name in DROPPED_FILES)
        or relative.name.endswith(DROPPED_SUFFIXES)
    )


def unpack_dist(tarball: Path, destination: Path) -> int:
    """Unpack the kept files of package/dist/ into destination; the number of files unpacked."""
    kept = []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.name.startswith(DIST) or not (member.isfile() or member.isdir()):
                continue
            relative = PurePosixPath(member.name[len(DIST) :])
            if not relative.parts or is_dropped(relative):
                continue
            member.name = str(relative)
            kept.append(member)
        # The "data" filter refuses absolute names, "..", links out of the folder and device files.
        archive.extractall(destination, members=kept, filter="data")
    # npm tarballs date every file 1985-10-26: give them the install time, so a file kept under the same name by a
    # new version (app.bundle.css, index.html) is not answered "not modified" to a browser that has the old one.
    for path in destination.rglob("*"):
        os.utime(path)
    files = sum(1 for member in kept if member.isfile())
    if not (destination / "index.html").is_file():
        raise InstallError(f"{tarball} has no {DIST}index.html: not a prebuilt OHIF viewer")
    return files


# --- Root-relative paths -----------------------------------------------------------------------------------------------

# href="/x", src="/x", content="/x" in HTML and XML; never protocol-relative "//host" URLs.
HTML_PATH = re.compile(r"""\b(href|src|content)=(["'])/(?!/)""")
PUBLIC_URL = re.compile(r"""(window\.PUBLIC_URL\s*=\s*)(["'])/\2""")
CSS_URL = re.compile(r"""url\(\s*(["']?)/(?!/)""")
# The bundler's public path, from which every chunk, worker, WebAssembly module and image is loaded.
JS_PUBLIC_PATH = re.compile(r"""(__webpack_require__\.p\s*=\s*)(["'])/\2""")
JSON_PATH = re.compile(r"""(:\s*")/(?!/)""")


def rewrite_html(text: str, prefix: str) -> str:
    text = HTML_PATH.sub(lambda m: f"{m[1]}={m[2]}{prefix}", text)
    return PUBLIC_URL.sub(lambda m: f"{m[1]}{m[2]}{prefix}{m[2]}", text)


def rewrite_css(text: str, prefix: str) -> str:
    return CSS_URL.sub(lambda m: f"url({m[1]}{prefix}", text)


def rewrite_js(text: str, prefix: str) -> str:
    return JS_PUBLIC_PATH.sub(lambda m: f"{m[1]}{m[2]}{prefix}{m[2]}", text)


def rewrite_json(text: str, prefix: str) -> str:
    return JSON_PATH.sub(lambda m: f"{m[1]}{prefix}", text)


REWRITERS = {
    ".html": rewrite_html,
    ".xml": rewrite_html,
    ".css": rewrite_css,
    ".js": rewrite_js,
    ".json": rewrite_json,
    ".webapp": rewrite_json,
}


def rewrite_root_paths(folder: Path, prefix: str) -> dict[str, int]:
    """Point every root-relative path of the build at prefix; the number of files changed, per suffix.

    Refuses a build whose index.html or bundles do not have the shape known here (a new OHIF version that moved them),
    rather than installing a viewer that loads nothing.
    """
    if not (prefix.startswith("/") and prefix.endswith("/")):
        raise InstallError(f"the prefix {prefix!r} must start and end with '/'")
    changed: dict[str, int] = {}
    public_path_set = False
    for path in sorted(folder.rglob("*")):
        rewrite = REWRITERS.get(path.suffix)
        if rewrite is None or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, prefix)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed[path.suffix] = changed.get(path.suffix, 0) + 1
            public_path_set |= path.suffix == ".js" and path.name.startswith("app.bundle.")
    index = (folder / "index.html").read_text(encoding="utf-8")
    if f'window.PUBLIC_URL="{prefix}"' not in index or f'src="{prefix}app-config.js"' not in index:
        raise InstallError("index.html does not set window.PUBLIC_URL or load app-config.js as this installer expects")
    if not public_path_set:
        raise InstallError("the app bundle has no public path (__webpack_require__.p) to rewrite")
    return changed


# --- Configuration -----------------------------------------------------------------------------------------------------


def app_config(prefix: str) -> str:
    """OHIF's configuration: the portal's DICOMweb on the same origin (the session cookie goes with every request)."""
    settings = {
        "prefix": prefix,
        "router_basename": prefix.rstrip("/") or "/",
        "dicomweb": DICOMWEB_ROOT,
        "home": PORTAL_HOME,
    }
    return APP_CONFIG_TEMPLATE.replace("__SETTINGS__", json.dumps(settings, indent=2))


APP_CONFIG_TEMPLATE = """\
/** @type {AppTypes.Config} OHIF configuration written by medarchive's bin/install_viewer (images/viewer_install.py). */
(function () {
  const medarchive = __SETTINGS__;
  // Same origin: the browser sends the portal's session cookie with every DICOMweb request; no token in the page.
  const dicomweb = window.location.origin + medarchive.dicomweb;
  window.config = {
    name: 'medarchive',
    routerBasename: medarchive.router_basename,
    extensions: [],
    modes: [],
    // The portal's worklist is where studies are found: no OHIF study list, and its logo leads back to the portal.
    showStudyList: false,
    whiteLabeling: {
      createLogoComponentFn: function (React) {
        return React.createElement(
          'a',
          { href: medarchive.home, className: 'text-primary text-lg font-semibold', 'data-cy': 'medarchive-home' },
          'medarchive'
        );
      },
    },
    // No first-visit "investigational use" dialog, no guided tour.
    investigationalUseDialog: { option: 'never' },
    customizationService: { 'ohif.tours': { $set: [] } },
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    showErrorDetails: 'production',
    strictZSpacingForVolumeViewport: true,
    maxNumberOfWebWorkers: 3,
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
    defaultDataSourceName: 'medarchive',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'medarchive',
        configuration: {
          friendlyName: 'medarchive',
          name: 'medarchive',
          qidoRoot: dicomweb,
          wadoRoot: dicomweb,
          wadoUriRoot: dicomweb + '/wado',
          qidoSupportsIncludeField: true,
          supportsReject: false,
          supportsStow: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
    httpErrorHandler: function (error) {
      console.warn('DICOMweb request failed', error && error.status);
    },
  };
})();
"""


def write_app_config(folder: Path, prefix: str) -> None:
    (folder / "app-config.js").write_text(app_config(prefix), encoding="utf-8")


# --- The whole install -------------------------------------------------------------------------------------------------


def precompress(folder: Path) -> int:
    """Write a .gz beside every file that gzip shrinks (whitenoise's compressor); the number written."""
    compressor = Compressor(use_gzip=True, use_brotli=False, quiet=True)
    written = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and compressor.should_compress(path.name):
            written += len(compressor.compress(str(path)))
    return written


def install(*, tarball: Path, integrity: str, target: Path, prefix: str = VIEWER_PREFIX) -> dict:
    """Install the viewer of tarball into target (replacing what is there only once everything succeeded)."""
    verify_integrity(tarball, integrity)
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".new")
    previous = target.with_name(target.name + ".old")
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    try:
        files = unpack_dist(tarball, staging)
        rewritten = rewrite_root_paths(staging, prefix)
        write_app_config(staging, prefix)
        compressed = precompress(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)
    return {"files": files, "rewritten": rewritten, "gzipped": compressed, "bytes": folder_size(target)}


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, required=True, help="the npm tarball of @ohif/app")
    parser.add_argument("--integrity", required=True, help="its expected npm integrity (sha512-...)")
    parser.add_argument("--target", type=Path, required=True, help="the folder to install into")
    parser.add_argument("--prefix", default=VIEWER_PREFIX, help=f"URL path the viewer is served under (default {VIEWER_PREFIX})")
    options = parser.parse_args(argv)
    try:
        summary = install(tarball=options.tarball, integrity=options.integrity, target=options.target, prefix=options.prefix)
    except (InstallError, tarfile.TarError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"installed {summary['files']} files ({summary['bytes'] / 1e6:.1f} MB with {summary['gzipped']} .gz) into {options.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
