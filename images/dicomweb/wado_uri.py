"""WADO-URI (PS3.18 9) for older viewers: GET /dicomweb/wado?requestType=WADO&studyUID=&seriesUID=&objectUID=.

contentType=application/dicom gives the instance as one Part 10 file, in the asked transferSyntax when it can be
produced, else in Explicit VR Little Endian (PS3.18 8.2.11). image/jpeg and image/png are rendered by images.rendering.
HTTP only: the instance and its bytes come from images/retrieve.py.
"""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from pydicom.uid import ExplicitVRLittleEndian
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from subscribers import audit

from .. import retrieve
from ..errors import IngestRefused
from ..ingest.validation import check_uid
from ..retrieve import NotAcceptable
from ..transcode import AS_STORED
from .accept import DICOM, media_ranges
from .responses import RequestRefused, not_acceptable
from .wado import ErrorsInJSON

RENDERED = {"image/jpeg": "jpeg", "image/png": "png"}
# Parameters of a rendered answer only (PS3.18 8.1.5, 8.2): with application/dicom they are a mistake (400).
RENDERING_PARAMETERS = ("frameNumber", "rows", "columns", "region", "windowCenter", "windowWidth", "imageQuality")
UNSUPPORTED = {
    "anonymize": "De-identification on retrieval (anonymize) is not offered by this archive",
    "presentationUID": "Rendering through a presentation state (presentationUID) is not offered by this archive",
    "presentationSeriesUID": "Rendering through a presentation state (presentationSeriesUID) is not offered by this archive",
}


def _bad(parameter: str, reason: str) -> RequestRefused:
    return RequestRefused(f"{parameter}: {reason}", status=400, code="invalid_parameter")


class WadoUri(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = ErrorsInJSON

    def handle_exception(self, exc):
        if isinstance(exc, NotAcceptable):
            exc = not_acceptable(exc.reason)
        response = super().handle_exception(exc)
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return response

    def get(self, request):
        params = request.GET
        if params.get("requestType") != "WADO":
            raise _bad("requestType", "must be WADO (PS3.18 9.1.2.1).")
        uids = {name: _uid(params, name) for name in ("studyUID", "seriesUID", "objectUID")}
        for name, reason in UNSUPPORTED.items():
            if name in params:
                raise _bad(name, f"{reason}.")
        study, (instance,) = retrieve.find_instances(
            request.auth, study_uid=uids["studyUID"], series_uid=uids["seriesUID"], sop_uid=uids["objectUID"]
        )
        description = retrieve.describe(instance)
        single_frame = description.number_of_frames == 1 or "frameNumber" in params
        media_type = _content_type(params.get("contentType"), image=description.has_pixel_data, single_frame=single_frame)
        if request.method == "HEAD":
            return HttpResponse(content_type=media_type)
        if media_type == DICOM:
            return self.dicom(request, study, instance)
        return self.rendered(request, study, instance, RENDERED[media_type])

    def dicom(self, request, study, instance):
        params = request.GET
        for name in RENDERING_PARAMETERS:
            if name in params:
                raise _bad(name, "applies to rendered images only, not to contentType=application/dicom.")
        asked = params.get("transferSyntax")
        if asked is not None and asked != AS_STORED:
            asked = _uid(params, "transferSyntax")
        # PS3.18 8.2.11: the asked syntax if possible, else Explicit VR Little Endian; as stored only when neither can be.
        preferences = [asked] if asked else []
        (planned,) = retrieve.plan([instance], [*preferences, ExplicitVRLittleEndian, AS_STORED])
        retrieve.record_retrieve(
            request.auth,
            study=study,
            level="instance",
            uid=instance.sop_instance_uid,
            resource="wado-uri",
            count=1,
            transfer_syntaxes=[planned.transfer_syntax],
            address=audit.client_address(request),
        )
        response = StreamingHttpResponse(retrieve.instance_chunks(planned), content_type=DICOM)
        response["Content-Disposition"] = f'attachment; filename="{instance.sop_instance_uid}.dcm"'
        return response

    def rendered(self, request, study, instance, fmt: str):
        try:
            from .. import rendering  # written beside this module; WADO-URI answers 406 for images until it is there
        except ImportError:
            raise not_acceptable("Rendered images are not available on this server; ask for contentType=application/dicom.") from None
        params = request.GET
        if "transferSyntax" in params:
            raise _bad("transferSyntax", "applies to contentType=application/dicom only (PS3.18 8.2.11).")
        frame = _integer(params, "frameNumber", default=1, low=1)
        try:
            window = _window(params, rendering)
            viewport = _viewport(params, instance, rendering)
            quality = _integer(params, "imageQuality", default=rendering.DEFAULT_QUALITY, low=1, high=100)
            data, content_type = rendering.render_frame(instance, frame, window=window, viewport=viewport, fmt=fmt, quality=quality)
        except rendering.InvalidParameter as error:
            raise _bad(_URI_NAMES.get(error.parameter, error.parameter), error.reason) from None
        except rendering.NotRenderable as error:
            raise not_acceptable(error.reason) from None
        retrieve.record_retrieve(
            request.auth,
            study=study,
            level="instance",
            uid=instance.sop_instance_uid,
            resource="wado-uri",
            count=1,
            address=audit.client_address(request),
            content_type=content_type,
            frame=frame,
        )
        return HttpResponse(data, content_type=content_type)


# The rendering module's parameter names, as WADO-URI calls them.
_URI_NAMES = {"frame": "frameNumber", "window": "windowCenter/windowWidth", "viewport": "rows/columns/region", "quality": "imageQuality"}


def _uid(params, name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _bad(name, "is required.")
    try:
        return check_uid(name, value)
    except IngestRefused as refusal:
        raise _bad(name, refusal.reason) from None


def _content_type(value: str | None, *, image: bool, single_frame: bool) -> str:
    """PS3.18 8.1.5: a list of media types with optional q. Without it, image/jpeg for a single frame image (or one frame
    of a multi-frame one), the DICOM object for anything else (PS3.18 2013 7.1.2, 7.2.2)."""
    if value is None:
        return "image/jpeg" if image and single_frame else DICOM
    offered = [DICOM, *RENDERED] if image else [DICOM]
    for media in media_ranges(value):
        if media.media_type in offered:
            return media.media_type
        if media.media_type in ("*/*", "application/*"):
            return DICOM
        if media.media_type == "image/*" and image:
            return "image/jpeg"
    raise not_acceptable(f"contentType {value!r}: this object is given as {', '.join(offered)}.")


def _integer(params, name: str, *, default: int, low: int, high: int | None = None) -> int:
    value = params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low or (high is not None and number > high):
        raise _bad(name, f"must be a whole number from {low}{f' to {high}' if high else ' up'}, not {value!r}.")
    return number


def _window(params, rendering):
    center, width = params.get("windowCenter"), params.get("windowWidth")
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise _bad("windowCenter" if center is None else "windowWidth", "windowCenter and windowWidth go together (PS3.18 8.2.8).")
    try:
        return rendering.Window(center=float(center), width=float(width))
    except ValueError:
        raise _bad("windowCenter/windowWidth", f"must be numbers, not {center!r} and {width!r}.") from None


def _viewport(params, instance, rendering):
    """rows and columns are the largest height and width of the answer (PS3.18 8.2.5-6); region is the part of the image
    as fractions xmin,ymin,xmax,ymax of its size (PS3.18 8.2.4)."""
    rows = _integer(params, "rows", default=0, low=1) if "rows" in params else None
    columns = _integer(params, "columns", default=0, low=1) if "columns" in params else None
    region = params.get("region")
    if region is None:
        return rendering.Viewport(width=columns, height=rows) if rows or columns else None
    try:
        xmin, ymin, xmax, ymax = (float(part) for part in region.split(","))
    except ValueError:
        raise _bad("region", "is xmin,ymin,xmax,ymax as fractions of the image from 0.0 to 1.0.") from None
    if not (0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1):
        raise _bad("region", "needs 0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1.")
    width, height = instance.columns or 0, instance.rows or 0
    sx, sy = round(xmin * width), round(ymin * height)
    sw, sh = max(1, round((xmax - xmin) * width)), max(1, round((ymax - ymin) * height))
    if rows is None and columns is None:
        columns, rows = sw, sh
    return rendering.Viewport(width=columns, height=rows, sx=sx, sy=sy, sw=sw, sh=sh)


wado = WadoUri.as_view()
