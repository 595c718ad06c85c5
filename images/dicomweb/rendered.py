"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3-4): images for display, JPEG or PNG, made by images.rendering.

An instance or one frame answers one image; a study, a series or a list of frames answers multipart/related with one
part per frame. Every answer carries an ETag naming the stored bytes and the parameters, so a viewer's repeated request
is a 304; each request leaves one audit event ("dicomweb.rendered"), 304s included, since the viewer shows the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F
from django.http import HttpResponse
from django.utils.http import parse_etags
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from subscribers import audit
from subscribers.access import NotVisible, Principal

from .. import rendering
from ..models import Instance, Series, Study
from ..rendering import JPEG, PNG, InvalidParameter, NotRenderable, Viewport, Window
from ..selectors import get_study
from .accept import MULTIPART, media_ranges, requested
from .multipart import parse_media_type
from .responses import RequestRefused, multipart_related, not_acceptable, retrieve_url

ACTION = "dicomweb.rendered"
MEDIA_TYPES = {"image/jpeg": JPEG, "image/png": PNG}
# A rendered study or series is one part per frame; beyond this many the answer stops and says so in a Warning 299
# header, the way DICOMweb reports results cut short. About 10 ms and 50 kB a CT frame: some 20 s and 100 MB at most.
MAX_RENDERED_PARTS = 2000
# The rendering of given stored bytes with given parameters never changes, but a share can be revoked: browsers keep
# it for an hour, privately, and then ask again (a 304 costs no rendering, but visibility is checked anew).
CACHE_CONTROL = "private, max-age=3600"
# PS3.18 Table 8.3.5-1.
ANNOTATIONS = {"patient", "technique"}
ICC_PROFILES = {"no", "yes", "srgb", "adobergb", "rommrgb"}


class ErrorsAsJSON(BaseContentNegotiation):
    """Refusals are JSON whatever the Accept header asked for; the image type itself is chosen by the view."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@dataclass(frozen=True)
class Asked:
    """The rendering a request asks for: media type (and whether as multipart/related) and the query parameters."""

    fmt: str
    multipart: bool
    window: Window | None
    viewport: Viewport | None
    quality: int

    @property
    def content_type(self) -> str:
        return rendering.CONTENT_TYPES[self.fmt]


class RenderedView(APIView):
    """GET only; authentication and permission (any member) as for all of DICOMweb."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = ErrorsAsJSON
    thumbnail = False

    def answer(self, request, asked: Asked, target: Study | Series | Instance, frames: list[int] | None) -> HttpResponse:
        raise NotImplementedError

    def get(self, request, study: str, series: str | None = None, instance: str | None = None, frames: str | None = None):
        asked = _asked(request, thumbnail=self.thumbnail, multipart_allowed=not self.thumbnail)
        frame_list = _frame_list(frames) if frames is not None else None
        target = _target(request.auth, study, series, instance)
        try:
            return self.answer(request, asked, target, frame_list)
        except InvalidParameter as error:
            raise _refused(error.parameter, error.reason) from None
        except NotRenderable as error:
            # PS3.18 8.7.8: the resource cannot be given in any rendered media type the request accepts.
            raise RequestRefused(error.reason, status=406, code="not_renderable") from None


# --- Rendered resources (PS3.18 10.4.1.1.3) -----------------------------------------------------------------------------


class Rendered(RenderedView):
    def answer(self, request, asked, target, frames):
        if isinstance(target, Instance):
            if frames is None:
                # A multi-frame instance asked for as one image gives its first frame; as multipart, every frame.
                frames = list(range(1, target.number_of_frames + 1)) if asked.multipart else [1]
            rendering.check_rendering(target, frames, viewport=asked.viewport)
            if len(frames) == 1 and not asked.multipart:
                return _single_image(request, asked, target, frames[0])
            return _multipart(request, asked, target, [(target, frames)])
        instances = _images_of(target)
        if not instances:
            raise NotRenderable(f"This {_level(target)} has no images to render (only reports, documents or other non-image objects).")
        return _multipart(request, asked, target, [(instance, list(range(1, instance.number_of_frames + 1))) for instance in instances])


def _single_image(request, asked: Asked, instance: Instance, frame: int) -> HttpResponse:
    etag = _etag(kind="rendered", sha256s=[instance.sha256], frames=[frame], asked=asked)
    if _not_modified(request, etag):
        _record(request, instance, resource="rendered", media_type=asked.content_type, frames=[frame], not_modified=True)
        return _with_caching(HttpResponse(status=304), etag)
    data, content_type = rendering.render_frame(
        instance, frame, window=asked.window, viewport=asked.viewport, fmt=asked.fmt, quality=asked.quality
    )
    _record(request, instance, resource="rendered", media_type=content_type, frames=[frame])
    return _with_caching(HttpResponse(data, content_type=content_type), etag)


def _multipart(request, asked: Asked, target, plan: list[tuple[Instance, list[int]]]) -> HttpResponse:
    """multipart/related; type="image/..." with one part per (instance, frame), at most MAX_RENDERED_PARTS of them."""
    total = sum(len(frames) for _, frames in plan)
    plan = _cap(plan, MAX_RENDERED_PARTS)
    etag = _etag(
        kind=f"rendered-{_level(target)}",
        sha256s=[instance.sha256 for instance, _ in plan],
        frames=[frame for _, frames in plan for frame in frames],
        asked=asked,
    )
    shown = min(total, MAX_RENDERED_PARTS)
    media_type = f'multipart/related; type="{asked.content_type}"'
    if _not_modified(request, etag):
        _record(request, target, resource="rendered", media_type=media_type, parts=shown, not_modified=True)
        return _with_caching(HttpResponse(status=304), etag)
    # Refused before the first part goes out, while the status can still say so: a viewport region outside an image.
    for instance, frames in plan:
        rendering.check_rendering(instance, frames, viewport=asked.viewport)
    response = multipart_related(_parts(request, asked, plan), root_type=asked.content_type)
    if total > shown:
        response["Warning"] = (
            f'299 medarchive "Only the first {shown} of {total} frames are rendered here; '
            'ask for the rendered frames of each instance for the rest."'
        )
    _record(request, target, resource="rendered", media_type=media_type, parts=shown, of=total)
    return _with_caching(response, etag)


def _parts(request, asked: Asked, plan: list[tuple[Instance, list[int]]]):
    for instance, frames in plan:
        location = retrieve_url(request, instance.study.study_instance_uid, instance.series.series_instance_uid, instance.sop_instance_uid)
        try:
            rendered = rendering.render_frames(
                instance, frames, window=asked.window, viewport=asked.viewport, fmt=asked.fmt, quality=asked.quality
            )
            for frame, data in rendered:
                yield {"Content-Type": asked.content_type, "Content-Location": f"{location}/frames/{frame}/rendered"}, [data]
        except NotRenderable:
            # The status line has gone out: an instance that cannot be decoded is left out (and logged by the renderer).
            continue


def _cap(plan: list[tuple[Instance, list[int]]], limit: int) -> list[tuple[Instance, list[int]]]:
    capped = []
    for instance, frames in plan:
        if limit <= 0:
            break
        capped.append((instance, frames[:limit]))
        limit -= len(frames[:limit])
    return capped


# --- Thumbnails (PS3.18 10.4.1.1.4) ---------------------------------------------------------------------------------


class Thumbnail(RenderedView):
    """A small image standing for the resource: a study's first series with images, a series' middle image, an
    instance's middle frame, or the first of the frames named."""

    thumbnail = True

    def answer(self, request, asked, target, frames):
        instance = target if isinstance(target, Instance) else rendering.representative_instance(target)
        if instance is None:
            raise NotRenderable(f"This {_level(target)} has no images to show (only reports, documents or other non-image objects).")
        frame = frames[0] if frames else rendering.representative_frame(instance)
        rendering.check_rendering(instance, [frame], viewport=asked.viewport)
        etag = _etag(kind="thumbnail", sha256s=[instance.sha256], frames=[frame], asked=asked)
        if _not_modified(request, etag):
            _record(request, target, resource="thumbnail", media_type=asked.content_type, frames=[frame], shown=instance, not_modified=True)
            return _with_caching(HttpResponse(status=304), etag)
        data, content_type = rendering.thumbnail(instance, frame, viewport=asked.viewport, fmt=asked.fmt, quality=asked.quality)
        _record(request, target, resource="thumbnail", media_type=content_type, frames=[frame], shown=instance)
        return _with_caching(HttpResponse(data, content_type=content_type), etag)


# --- The request: parameters, media type, target -------------------------------------------------------------------


def _asked(request, *, thumbnail: bool, multipart_allowed: bool) -> Asked:
    """The query parameters of PS3.18 Table 8.3.5-1 (400 naming a malformed one) and the media type (406)."""
    params = request.query_params
    window = None if thumbnail else _window(params.get("window"))
    viewport = _viewport(params.get("viewport"), thumbnail=thumbnail)
    quality = _quality(params.get("quality"))
    annotation = params.get("annotation")
    # Annotations are the server's choice (PS3.18 8.3.5.1.1); none is burned in, but a misspelt keyword is refused.
    if annotation is not None and not {a.strip().lower() for a in annotation.split(",")} <= ANNOTATIONS:
        raise _refused("annotation", "The annotation parameter takes patient and/or technique, separated by a comma.")
    icc = params.get("iccprofile")
    # Grayscale renderings have no colour space to describe, and colour ones are sent as decoded ("no").
    if icc is not None and icc.strip().lower() not in ICC_PROFILES:
        raise _refused("iccprofile", "The iccprofile parameter takes no, yes, srgb, adobergb or rommrgb.")
    fmt, multipart = _negotiate(requested(request), multipart_allowed=multipart_allowed)
    return Asked(fmt=fmt, multipart=multipart, window=window, viewport=viewport, quality=quality)


def _window(value: str | None) -> Window | None:
    """window=center,width[,function] (PS3.18 8.3.5.1.4); the function defaults to linear."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise _refused("window", "The window parameter is center,width,function (e.g. window=40,400,linear).")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise _refused("window", f"The window center and width must be numbers, not {parts[0]!r} and {parts[1]!r}.") from None
    try:
        return Window(center=center, width=width, function=parts[2] if len(parts) == 3 and parts[2] else rendering.LINEAR)
    except InvalidParameter as error:
        raise _refused("window", error.reason) from None


def _viewport(value: str | None, *, thumbnail: bool) -> Viewport | None:
    """viewport=vw,vh[,sx,sy,sw,sh] (PS3.18 8.3.5.1.3); thumbnails take vw,vh only. Empty region values take defaults."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in ((2,) if thumbnail else (2, 6)):
        shape = "vw,vh" if thumbnail else "vw,vh or vw,vh,sx,sy,sw,sh"
        raise _refused("viewport", f"The viewport parameter is {shape} in pixels (e.g. viewport=512,512).")
    try:
        numbers = [int(p) if p else None for p in parts]
    except ValueError:
        raise _refused("viewport", "The viewport values must be whole numbers of pixels.") from None
    numbers += [None] * (6 - len(numbers))
    vw, vh, sx, sy, sw, sh = numbers
    try:
        return Viewport(width=vw, height=vh, sx=sx or 0, sy=sy or 0, sw=sw, sh=sh)
    except InvalidParameter as error:
        raise _refused("viewport", error.reason) from None


def _quality(value: str | None) -> int:
    if value is None:
        return rendering.DEFAULT_QUALITY
    try:
        quality = int(value)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise _refused("quality", "The quality parameter must be a whole number from 1 to 100.")
    return quality


def _negotiate(accept: str, *, multipart_allowed: bool) -> tuple[str, bool]:
    """(format, as multipart) from the Accept header or the accept query parameter (PS3.18 8.7.4).

    JPEG is the default (*/*, image/*). A study, series or frame list is multipart/related whichever image type is
    named; multipart/related itself names the part type in its type parameter.
    """
    for media in media_ranges(accept or "*/*"):
        if media.media_type == MULTIPART and multipart_allowed:
            part_type, _ = parse_media_type(media.params.get("type") or "image/jpeg")
            if part_type in ("image/*", "*/*"):
                return JPEG, True
            if part_type in MEDIA_TYPES:
                return MEDIA_TYPES[part_type], True
        elif media.media_type in MEDIA_TYPES:
            return MEDIA_TYPES[media.media_type], False
        elif media.media_type in ("*/*", "image/*"):
            return JPEG, False
    also = " (or multipart/related of them)" if multipart_allowed else ""
    raise not_acceptable(f"Rendered images are given as image/jpeg or image/png{also}; the request accepts neither ({accept}).")


def _frame_list(frames: str) -> list[int]:
    try:
        numbers = [int(part) for part in frames.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise _refused("frames", "Frames are numbered from 1 and listed with commas (e.g. frames/1 or frames/1,2,3).")
    return numbers


def _target(principal: Principal, study_uid: str, series_uid: str | None, sop_instance_uid: str | None) -> Study | Series | Instance:
    """The study, series or instance the caller may see (own first, then shared); NotVisible (404) otherwise.

    Visibility is decided for the study by the selector; its series and instances are visible with it (which is how
    series_visible_to and instances_visible_to define them), so they are looked up through the study: one selector
    query instead of nested ones, which matters to a viewer asking for one frame after another.
    """
    study = get_study(principal, study_uid)
    if series_uid is None:
        return study
    if sop_instance_uid is None:
        found = study.series.filter(series_instance_uid=series_uid)
    else:
        found = study.instances.filter(series__series_instance_uid=series_uid, sop_instance_uid=sop_instance_uid).select_related("series")
    target = found.first()
    if target is None:
        raise NotVisible()
    target.study = study
    return target


def _images_of(target: Study | Series) -> list[Instance]:
    """The instances with pixel data of a visible study or series, in series and instance order."""
    study = target if isinstance(target, Study) else target.study
    instances = study.instances.filter(rows__isnull=False, columns__isnull=False).select_related("series")
    if isinstance(target, Series):
        instances = instances.filter(series=target)
    order = (F("series__series_number").asc(nulls_last=True), "series__pk", F("instance_number").asc(nulls_last=True), "pk")
    found = list(instances.order_by(*order))
    for instance in found:
        instance.study = study
    return found


# --- The answer: caching headers, audit ----------------------------------------------------------------------------


def _etag(*, kind: str, sha256s: list[str], frames: list[int], asked: Asked) -> str:
    return '"{}"'.format(
        rendering.rendition_id(
            kind=f"{kind}-multipart" if asked.multipart else kind,
            sha256s=sha256s,
            frames=frames,
            window=asked.window,
            viewport=asked.viewport,
            fmt=asked.fmt,
            quality=asked.quality,
        )
    )


def _not_modified(request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    # RFC 9110 13.1.2: If-None-Match compares weakly, so W/"x" matches "x".
    tags = {tag.removeprefix("W/") for tag in parse_etags(header)}
    return "*" in tags or etag in tags


def _with_caching(response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    response["Vary"] = "Accept"
    return response


def _record(
    request, target, *, resource: str, media_type: str, not_modified: bool = False, shown: Instance | None = None, **detail
) -> None:
    """One audit event for the request: what was shown, to whom (the principal), and whether it was a shared study."""
    study = target if isinstance(target, Study) else target.study
    uids = {"study_instance_uid": study.study_instance_uid}
    if isinstance(target, Series | Instance):
        uids["series_instance_uid"] = (target if isinstance(target, Series) else target.series).series_instance_uid
    if isinstance(target, Instance):
        uids["sop_instance_uid"] = target.sop_instance_uid
    elif shown is not None:
        uids["shown_sop_instance_uid"] = shown.sop_instance_uid
    audit.record(
        action=ACTION,
        principal=request.auth,
        request=request,
        obj=target,
        resource=resource,
        level=_level(target),
        media_type=media_type,
        shared=study.institution_id != request.auth.institution_id,
        **({"not_modified": True} if not_modified else {}),
        **uids,
        **detail,
    )


def _level(target) -> str:
    return {Study: "study", Series: "series", Instance: "instance"}[type(target)]


def _refused(parameter: str, reason: str) -> RequestRefused:
    """400 Bad Request; the reason names the parameter, and so does the code (invalid_window, invalid_viewport, ...)."""
    return RequestRefused(reason, status=400, code=f"invalid_{parameter}")


study_rendered = series_rendered = instance_rendered = frames_rendered = Rendered.as_view()
study_thumbnail = series_thumbnail = instance_thumbnail = frames_thumbnail = Thumbnail.as_view()
