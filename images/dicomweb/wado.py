"""WADO-RS (PS3.18 10.4): retrieve studies, series, instances, metadata, frames and bulk data.

HTTP only: what the caller accepts is read in accept.py, which instances and their bytes come from images/retrieve.py
(conversions in images/transcode.py). Instances and frames are streamed part by part, one instance at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from django.http import HttpResponse, StreamingHttpResponse
from pydicom.uid import ExplicitVRLittleEndian
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from subscribers import audit
from subscribers.access import NotVisible

from .. import retrieve
from ..frames import OCTET_STREAM
from ..retrieve import InvalidFrames, NotAcceptable
from ..transcode import PIXEL_DATA, CannotTranscode, producible_names
from . import accept
from .responses import RENDERERS, RequestRefused, multipart_related, not_acceptable, retrieve_url

FRAME_LIST = re.compile(r"\s*[1-9][0-9]{0,8}\s*")
TAG = re.compile(r"[0-9A-Fa-f]{8}")


class ErrorsInJSON(BaseContentNegotiation):
    """WADO-RS reads the Accept header itself (accept.py); DRF renders only the error answers, in JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class WadoView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = ErrorsInJSON

    def handle_exception(self, exc):
        if isinstance(exc, NotAcceptable | CannotTranscode):
            exc = not_acceptable(exc.reason)
        elif isinstance(exc, InvalidFrames):
            exc = RequestRefused(exc.reason, status=400, code="invalid_frames")
        response = super().handle_exception(exc)
        # Errors are {"error", "code"} JSON whatever was accepted: they are not DICOM JSON data sets.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return response

    def record(self, request, study, *, level: str, uid: str, resource: str, count: int, transfer_syntaxes=None, **detail) -> None:
        if request.method != "HEAD":
            retrieve.record_retrieve(
                request.auth,
                study=study,
                level=level,
                uid=uid,
                resource=resource,
                count=count,
                transfer_syntaxes=transfer_syntaxes,
                address=audit.client_address(request),
                **detail,
            )


def _headers_only(request, response):
    """HEAD: the answer's headers without reading a byte of storage."""
    if request.method != "HEAD":
        return response
    head = HttpResponse(status=response.status_code, content_type=response["Content-Type"])
    return head


# --- Studies, series, instances (PS3.18 10.4.1.1.1) -------------------------------------------------------------------


class RetrieveInstances(WadoView):
    level = "study"

    def get(self, request, study: str, series: str = "", instance: str = ""):
        found, instances = retrieve.find_instances(request.auth, study_uid=study, series_uid=series, sop_uid=instance)
        preferences = accept.dicom_preferences(accept.requested(request), single_part=self.level == "instance")
        if not preferences:
            raise not_acceptable(
                f"Instances are given as {accept.describe_dicom()}; nothing in the Accept header asks for that. "
                f"Transfer syntaxes: {producible_names()}."
            )
        try:
            planned = retrieve.plan(instances, [preference.transfer_syntax for preference in preferences])
        except NotAcceptable as refusal:
            raise not_acceptable(f"{refusal.reason} This archive gives {producible_names()}.") from None
        syntaxes = [item.transfer_syntax for item in planned]
        self.record(
            request,
            found,
            level=self.level,
            uid=instance or series or study,
            resource="instances",
            count=len(planned),
            transfer_syntaxes=syntaxes,
        )
        if not preferences[planned[0].preference].multipart:  # a single instance, asked for as one application/dicom part
            response = StreamingHttpResponse(
                retrieve.instance_chunks(planned[0]), content_type=f"application/dicom; transfer-syntax={syntaxes[0]}"
            )
            return _headers_only(request, response)
        parts = ((self.part_headers(request, study, item), retrieve.instance_chunks(item)) for item in planned)
        uniform = syntaxes[0] if len(set(syntaxes)) == 1 else ""
        return _headers_only(request, multipart_related(parts, root_type=accept.DICOM, transfer_syntax=uniform))

    @staticmethod
    def part_headers(request, study: str, item: retrieve.PlannedInstance) -> dict[str, str]:
        instance = item.instance
        return {
            "Content-Type": f"application/dicom; transfer-syntax={item.transfer_syntax}",
            "Content-Location": retrieve_url(request, study, instance.series.series_instance_uid, instance.sop_instance_uid),
        }


class RetrieveSeries(RetrieveInstances):
    level = "series"


class RetrieveInstance(RetrieveInstances):
    level = "instance"


# --- Metadata (PS3.18 10.4.1.1.2) ---------------------------------------------------------------------------------------


class RetrieveMetadata(WadoView):
    """DICOM JSON of each instance, from the index alone: the stored files are not opened. Streamed as it is read."""

    renderer_classes = RENDERERS  # DRF's negotiation picks application/dicom+json or application/json, else 406
    content_negotiation_class = APIView.content_negotiation_class
    level = "study"

    def get(self, request, study: str, series: str = "", instance: str = ""):
        found, instances = retrieve.visible_instances(request.auth, study_uid=study, series_uid=series, sop_uid=instance)
        count = instances.count()
        if not count:
            raise NotVisible()

        def url_of(item):
            return retrieve_url(request, study, item.series.series_instance_uid, item.sop_instance_uid)

        self.record(request, found, level=self.level, uid=instance or series or study, resource="metadata", count=count)
        response = StreamingHttpResponse(_json_array(retrieve.metadata(instances, url_of=url_of)), content_type=request.accepted_media_type)
        return _headers_only(request, response)


class RetrieveSeriesMetadata(RetrieveMetadata):
    level = "series"


class RetrieveInstanceMetadata(RetrieveMetadata):
    level = "instance"


# --- Frames and bulk data (PS3.18 10.4.1.1.5, 10.4.1.1.6) ---------------------------------------------------------------


class RetrieveFrames(WadoView):
    def get(self, request, study: str, series: str, instance: str, frames: str):
        numbers = _frame_numbers(frames)
        found, (target,) = retrieve.find_instances(request.auth, study_uid=study, series_uid=series, sop_uid=instance)
        retrieve.check_frames(target, numbers)
        return self.frames_response(request, found, target, numbers, resource="frames")

    def frames_response(self, request, found, target, numbers: list[int], *, resource: str):
        answer = accept.pixel_answer(accept.pixel_preferences(accept.requested(request)), retrieve.describe(target))
        if answer is None:
            raise not_acceptable(
                f"The frames of instance {target.sop_instance_uid} (stored as {target.transfer_syntax_uid}) are given as "
                f"{accept.describe_pixels()}; nothing in the Accept header asks for what can be given."
            )
        self.record(
            request,
            found,
            level="instance",
            uid=target.sop_instance_uid,
            resource=resource,
            count=1,
            transfer_syntaxes=[answer.transfer_syntax],
            frames=numbers if len(numbers) <= 100 else len(numbers),
        )
        base = retrieve_url(request, found.study_instance_uid, target.series.series_instance_uid, target.sop_instance_uid)
        parts = (
            (
                {
                    "Content-Type": f"{frame.media_type}; transfer-syntax={frame.transfer_syntax_uid}",
                    "Content-Location": f"{base}/frames/{number}",
                },
                [frame.data],
            )
            for number, frame in zip(numbers, retrieve.frames(target, numbers, as_stored=answer.as_stored), strict=False)
        )
        response = multipart_related(parts, root_type=answer.media_type, transfer_syntax=answer.transfer_syntax)
        return _headers_only(request, response)


class RetrieveBulkdata(RetrieveFrames):
    def get(self, request, study: str, series: str, instance: str, tag: str):
        if not TAG.fullmatch(tag):
            raise RequestRefused(f"{tag!r} is not a DICOM tag: give 8 hexadecimal digits, e.g. 7FE00010.", status=400, code="invalid_tag")
        found, (target,) = retrieve.find_instances(request.auth, study_uid=study, series_uid=series, sop_uid=instance)
        tag_value = int(tag, 16)
        if tag_value == PIXEL_DATA:  # the Pixel Data bulk data is every frame, one part each (PS3.18 8.7.3.3.2)
            description = retrieve.describe(target)
            if not description.has_pixel_data:
                raise NotVisible()
            return self.frames_response(request, found, target, list(range(1, description.number_of_frames + 1)), resource="bulkdata")
        preferences = accept.pixel_preferences(accept.requested(request))
        if not any(preference.media_type in (OCTET_STREAM, "*/*") for preference in preferences):
            raise not_acceptable('Bulk data is given as multipart/related; type="application/octet-stream".')
        value = retrieve.bulk_value(target, tag_value)
        if value is None:
            raise NotVisible()
        self.record(request, found, level="instance", uid=target.sop_instance_uid, resource="bulkdata", count=1, tag=tag.upper())
        part = {"Content-Type": f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}"}
        return _headers_only(request, multipart_related([(part, [value])], root_type=OCTET_STREAM))


def _json_array(items) -> Iterator[bytes]:
    yield b"["
    for index, item in enumerate(items):
        yield (b"," if index else b"") + json.dumps(item, separators=(",", ":")).encode()
    yield b"]"


def _frame_numbers(value: str) -> list[int]:
    """PS3.18 10.4.1.1.5: a comma-separated list of one or more non-duplicate frame numbers, from 1, in any order."""
    items = value.split(",")
    if not all(FRAME_LIST.fullmatch(item) for item in items):
        raise RequestRefused(
            f"The frame list {value[:100]!r} is not a comma-separated list of frame numbers counted from 1 (e.g. 1,3,5).",
            status=400,
            code="invalid_frames",
        )
    numbers = [int(item) for item in items]
    if len(set(numbers)) != len(numbers):
        raise RequestRefused("The frame list names a frame more than once.", status=400, code="invalid_frames")
    return numbers


retrieve_study = RetrieveInstances.as_view()
retrieve_series = RetrieveSeries.as_view()
retrieve_instance = RetrieveInstance.as_view()
study_metadata = RetrieveMetadata.as_view()
series_metadata = RetrieveSeriesMetadata.as_view()
instance_metadata = RetrieveInstanceMetadata.as_view()
retrieve_frames = RetrieveFrames.as_view()
retrieve_bulkdata = RetrieveBulkdata.as_view()
