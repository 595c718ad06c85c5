"""Serves the installed OHIF viewer (settings.VIEWER_ROOT) under /viewer/ to logged-in users.

A view rather than staticfiles: the viewer is a separate, already-built application (its bundles are hashed by its own
build, carry references to source maps that are not shipped, and would fail ManifestStaticFilesStorage), it needs a
fallback to index.html for its client-side routes, and only logged-in users get it. Files are answered with
FileResponse (streamed, never read into memory), with the .gz that bin/install_viewer wrote when the browser accepts
gzip, and cached for a year where their name carries a content hash.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect
from django.utils._os import safe_join
from django.utils.cache import get_conditional_response, patch_vary_headers
from django.utils.http import http_date
from django.views.decorators.http import require_safe

from subscribers.decorators import member_required

# Content types the system's mimetypes table may lack or get wrong; browsers refuse WebAssembly and module scripts
# served with the wrong one (and the portal sends nosniff).
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".webapp": "application/x-web-app-manifest+json",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".xml": "application/xml",
}
# Names the viewer's build gives a content hash (app.bundle.0f6159c501addfe9.js, 34b1e6b1deb5828e.wasm): they never
# change, so the browser keeps them for a year. Everything else is revalidated on each load.
HASHED_NAME = re.compile(r"(^|\.)[0-9a-f]{16}\.[a-z0-9]+$")
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
INDEX = "index.html"


def _file(relative: str) -> Path | None:
    """The installed file at relative (never outside VIEWER_ROOT, never a dotfile such as the install stamp)."""
    if any(part.startswith(".") for part in relative.split("/")):
        return None
    try:
        path = Path(safe_join(settings.VIEWER_ROOT, relative))
    except ValueError:  # ".." or an absolute path: outside the viewer's folder
        return None
    return path if path.is_file() else None


def _same_time(gzipped: Path, original: Path) -> bool:
    return gzipped.stat().st_mtime_ns >= original.stat().st_mtime_ns


def _is_client_route(relative: str) -> bool:
    """OHIF's own routes (viewer, viewer/dicomweb, segmentation...) have no file extension in their last part."""
    return "." not in relative.rsplit("/", 1)[-1]


@require_safe
@member_required
def viewer_file(request, path: str = ""):
    """GET /viewer/<path>: an installed file, or index.html for a client-side route of the viewer."""
    if not path:
        # OHIF's own study list is off (studies are found in the portal's worklist): its root would be a dead end.
        return redirect("study-list")
    found = _file(path)
    if found is None and _is_client_route(path):
        found = _file(INDEX)
        if found is None:
            return HttpResponse(
                "The viewer is not installed on this server: run bin/install_viewer.", status=503, content_type="text/plain"
            )
    if found is None:
        raise Http404("No such file in the viewer.")

    content_type = CONTENT_TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    cache_control = IMMUTABLE if HASHED_NAME.search(found.name) else REVALIDATE
    body, encoding = found, None
    gzipped = found.with_name(found.name + ".gz")
    # The installer gives each .gz its file's time: a file edited since (app-config.js by hand) is sent as it is now.
    if "gzip" in request.headers.get("Accept-Encoding", "") and gzipped.is_file() and _same_time(gzipped, found):
        body, encoding = gzipped, "gzip"
    stat = body.stat()
    # Each encoding is its own representation with its own validator (RFC 9110 8.8.3).
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}{"-gz" if encoding else ""}"'
    response = get_conditional_response(request, etag=etag, last_modified=int(stat.st_mtime))
    if response is None:
        response = FileResponse(body.open("rb"), content_type=content_type, filename=found.name)  # closed by Django
        if encoding:
            # Set before the response leaves the view, so the project's gzip middleware leaves it alone.
            response["Content-Encoding"] = encoding
        response["ETag"] = etag
        response["Last-Modified"] = http_date(stat.st_mtime)
    patch_vary_headers(response, ["Accept-Encoding"])
    response["Cache-Control"] = cache_control
    return response
