"""Answers of the DICOMweb services: DICOM JSON (PS3.18 F.2) elements and renderers, Retrieve URLs, error answers."""

from __future__ import annotations

import uuid

from django.http import StreamingHttpResponse
from django.urls import reverse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer

from .multipart import write_multipart

DICOM_JSON = "application/dicom+json"


class DicomJSONRenderer(JSONRenderer):
    """The DICOM JSON media type (PS3.18 F.2); plain application/json is offered beside it for generic clients."""

    media_type = DICOM_JSON
    format = "dicomjson"


# DICOM JSON first, so an absent Accept or */* gets it; an Accept naming neither (e.g. only application/dicom+xml,
# which we do not offer) is 406 Not Acceptable (PS3.18 8.7.8.1).
RENDERERS = [DicomJSONRenderer, JSONRenderer]


def element(vr: str, *values) -> dict:
    """One DICOM JSON attribute (PS3.18 F.2.2); no values gives the empty attribute that Type 2 allows."""
    values = [v for v in values if v is not None and v != ""]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def sequence(items: list[dict]) -> dict:
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def dataset(attributes: dict[int, dict]) -> dict:
    """A DICOM JSON object from {tag: element}; keys are 8 upper-case hex digits in ascending order (PS3.18 F.2.1)."""
    return {f"{tag:08X}": attributes[tag] for tag in sorted(attributes)}


def studies_url(request) -> str:
    return request.build_absolute_uri(reverse("dicomweb-studies"))


def retrieve_url(request, study_instance_uid: str, series_instance_uid: str = "", sop_instance_uid: str = "") -> str:
    """Absolute WADO-RS URL (PS3.18 10.4.1.1) of a study, or of one instance when series and SOP Instance UIDs are given."""
    url = f"{studies_url(request)}/{study_instance_uid}"
    if series_instance_uid and sop_instance_uid:
        url += f"/series/{series_instance_uid}/instances/{sop_instance_uid}"
    return url


class RequestRefused(exceptions.APIException):
    """A request refused as a whole before anything was stored; shaped as {"error", "code"} like every API error."""

    def __init__(self, reason: str, *, status: int, code: str):
        self.status_code = status
        super().__init__(detail=reason, code=code)


# --- multipart/related answers (PS3.18 8.6.1.2) --------------------------------------------------------------------------


def new_boundary() -> str:
    return f"medarchive-{uuid.uuid4().hex}"


def multipart_related(parts, *, root_type: str, transfer_syntax: str = "") -> StreamingHttpResponse:
    """A streamed multipart/related answer (PS3.18 8.6.1.2) of (headers, chunks) parts; the transfer-syntax parameter
    names the syntax of every part when they share one (PS3.18 8.7.3.4)."""
    boundary = new_boundary()
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return StreamingHttpResponse(
        write_multipart(parts, boundary), content_type=f'multipart/related; type="{root_type}"{syntax}; boundary={boundary}'
    )


def not_acceptable(reason: str) -> RequestRefused:
    """PS3.18 8.7.8.1: no acceptable media type (or transfer syntax) can be given: 406 with what can be."""
    return RequestRefused(reason, status=406, code="not_acceptable")
