"""STOW-RS (PS3.18 10.5): instances POSTed as multipart/related; type="application/dicom", each part through the ingest service.

The body is streamed to one temporary file per part and checked whole (multipart syntax, media types, size) before
anything is stored, so a malformed request stores nothing; then each part is ingested on its own and the answer is
the Store Instances Response Module (PS3.18 Annex I) in DICOM JSON.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import pydicom
from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from subscribers import audit
from subscribers.drf import HasRole, IsMember
from subscribers.models import Role

from ..errors import IngestRefused, NotAuthorized
from ..ingest import IngestCache, IngestResult, check_may_register, ingest_instance, record_batch, record_refusal
from ..ingest.validation import check_uid
from .multipart import MultipartError, MultipartReader, check_boundary, parse_media_type
from .responses import RENDERERS, RequestRefused, dataset, element, retrieve_url, sequence

SOURCE = "stow-rs"
DICOM = "application/dicom"
# Every part becomes a temporary file; this bounds their number (and fits the US part number in the answer).
MAX_PARTS = 50_000

# Tags of the Store Instances Response Module (PS3.18 Table I.1-1) and of the SOP Instance Reference Macro (PS3.3 10-11).
RETRIEVE_URL = 0x00081190
FAILED_SOP_SEQUENCE = 0x00081198
REFERENCED_SOP_SEQUENCE = 0x00081199
FAILURE_REASON = 0x00081197
REFERENCED_SOP_CLASS_UID = 0x00081150
REFERENCED_SOP_INSTANCE_UID = 0x00081155

# PS3.18 Annex I gives a failed instance only a numeric Failure Reason (0008,1197), which tells a person little.
# The refusal's own text goes beside it in a private block (PS3.5 7.8), which any DICOM JSON reader keeps or
# ignores: Private Creator (0009,0010) "MEDARCHIVE 1", the reason (0009,1001) LT, our refusal code (0009,1002) LO
# and the number of the part in the request (0009,1003) US, which names a part whose UIDs could not be read.
# Not Error Comment (0000,0902): that is a DIMSE command element (PS3.7 Annex E), not a data set attribute, and
# its LO VR holds only 64 characters. No standard data set attribute carries a free-text failure description.
PRIVATE_CREATOR = (0x00090010, "MEDARCHIVE 1")
FAILURE_TEXT = 0x00091001
FAILURE_CODE = 0x00091002
FAILURE_PART = 0x00091003


class NotInTargetStudy(IngestRefused):
    """POST /studies/{study} with an instance of another study (PS3.18 Table 10.5.1-1: all shall have that Study UID)."""

    code = "not_in_study"
    # Table I.2-2 has no code for this; A900 opens its A9xx range ("Error: Data Set does not match SOP Class"), the
    # nearest meaning: the data set does not match what the target resource requires.
    dicom_status = 0xA900
    # Table 10.5.3-1 names "Study Instance UID mismatch" as a 409 Conflict.
    http_status = 409


class UnreadBody(BaseParser):
    """Claims every media type without reading a byte: DRF's CSRF check reads request.POST, and the view streams the body itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


@dataclass
class SpooledPart:
    index: int
    path: str  # holds at most DICOM_MAX_INSTANCE_BYTES + 1 bytes of the part


@dataclass(frozen=True)
class PartIdentity:
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""


@dataclass
class Failure:
    part: SpooledPart
    identity: PartIdentity
    refusal: IngestRefused


class StoreInstances(APIView):
    """POST /dicomweb/studies[/{study}] stores instances (STOW-RS). GET here is QIDO-RS/WADO-RS, not there yet: 405."""

    renderer_classes = RENDERERS
    parser_classes = [UnreadBody]

    def get_permissions(self):
        if self.request.method == "POST":
            return [HasRole(Role.REGISTER)()]
        return [IsMember()]

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        # A request refused as a whole answers {"error", "code"} like the rest of the API, which is JSON but not a
        # DICOM JSON data set, so it is not labelled application/dicom+json whatever the Accept header asked for.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return response

    def post(self, request, study: str | None = None):
        principal = request.auth
        try:
            check_may_register(principal)
        except NotAuthorized as refusal:
            raise RequestRefused(refusal.reason, status=403, code=refusal.code) from None
        target_study = _target_study(study)
        boundary = _boundary_of(request)
        stream = _body_stream(request)
        with tempfile.TemporaryDirectory(prefix="stow-", dir=settings.FILE_UPLOAD_TEMP_DIR) as folder:
            parts = _spool(stream, boundary, folder)
            stored, failures = _store(request, principal, parts, target_study)
        return Response(_store_response(request, target_study, stored, failures), status=_status(stored, failures))


# --- The request as a whole: target, media type, body ------------------------------------------------------------


def _target_study(study: str | None) -> str | None:
    if study is None:
        return None
    try:
        return check_uid("StudyInstanceUID", study)
    except IngestRefused as refusal:
        raise RequestRefused(f"The study in the URL: {refusal.reason}", status=400, code="invalid_uid") from None


def _boundary_of(request) -> bytes:
    media_type, params = parse_media_type(request.META.get("CONTENT_TYPE", ""))
    if media_type != "multipart/related":
        raise RequestRefused(
            f'STOW-RS takes a multipart/related; type="application/dicom" body (PS3.18 10.5.1.4), '
            f"not {media_type or 'a body without Content-Type'}.",
            status=415,
            code="unsupported_media_type",
        )
    # RFC 2387 requires the type parameter; a client that leaves it out is taken to send application/dicom parts.
    root_type, _ = parse_media_type(params.get("type") or DICOM)
    if root_type in ("application/dicom+json", "application/dicom+xml"):
        raise RequestRefused(
            f'Storing metadata with separate bulk data (type="{root_type}") is not supported here; '
            "send each instance whole as an application/dicom part.",
            status=415,
            code="unsupported_media_type",
        )
    if root_type != DICOM:
        raise RequestRefused(
            f'The parts of a STOW-RS request here must be application/dicom, not type="{root_type}".',
            status=415,
            code="unsupported_media_type",
        )
    try:
        return check_boundary(params.get("boundary"))
    except MultipartError as error:
        raise RequestRefused(error.reason, status=error.http_status, code=error.code) from None


def _body_stream(request):
    """A file-like over the request body (PS3.18 10.5.1.3: Content-Length, or a transfer coding such as chunked)."""
    http = request._request
    length = http.META.get("CONTENT_LENGTH")
    if length:
        try:
            length = int(length)
        except ValueError:
            raise RequestRefused("The Content-Length header is not a number.", status=400, code="bad_content_length") from None
        if length > settings.DICOMWEB_MAX_REQUEST_BYTES:
            raise _too_large()
        return http  # Django reads it within Content-Length
    if isinstance(http, WSGIRequest):
        # Without Content-Length Django's WSGIRequest reads nothing. A server that decodes chunked bodies and marks the
        # input as ending where the body ends (gunicorn sets wsgi.input_terminated) can be read directly.
        if http.environ.get("wsgi.input_terminated"):
            return http.environ["wsgi.input"]
        raise RequestRefused("Send a Content-Length header (this server cannot read a chunked body).", status=411, code="length_required")
    return http  # ASGI: Django has received the whole body into a temporary file already


def _too_large() -> RequestRefused:
    limit = settings.DICOMWEB_MAX_REQUEST_BYTES
    return RequestRefused(
        f"The request body is larger than the {limit:,} bytes this archive accepts in one STOW-RS request; send fewer instances per request.",
        status=413,
        code="request_too_large",
    )


def _spool(stream, boundary: bytes, folder: str) -> list[SpooledPart]:
    """Write each part to its own file in folder; refuse the whole request on a malformed body or a non-DICOM part."""
    # One byte over the per-object limit is enough for the ingest service to refuse the part: the rest is counted, not kept.
    keep = settings.DICOM_MAX_INSTANCE_BYTES + 1
    parts = []
    try:
        for part in MultipartReader(stream, boundary, max_bytes=settings.DICOMWEB_MAX_REQUEST_BYTES):
            if part.index > MAX_PARTS:
                raise RequestRefused(
                    f"The request has more than {MAX_PARTS:,} parts; send fewer per request.", status=413, code="too_many_parts"
                )
            _check_part_type(part)
            path = os.path.join(folder, f"part-{part.index:06d}.dcm")
            size = 0
            with open(path, "wb") as out:
                for chunk in part.chunks():
                    if size < keep:
                        out.write(chunk[: keep - size])
                    size += len(chunk)
            parts.append(SpooledPart(index=part.index, path=path))
    except MultipartError as error:
        if error.http_status == 413:
            raise _too_large() from None
        raise RequestRefused(error.reason, status=error.http_status, code=error.code) from None
    if not parts:
        raise RequestRefused("The request has no parts; send one DICOM instance per part.", status=400, code="no_instances")
    return parts


def _check_part_type(part) -> None:
    # A part without Content-Type is taken to be of the request's type (application/dicom), as most clients expect.
    media_type, _ = parse_media_type(part.headers.get("content-type", DICOM))
    if media_type != DICOM:
        raise RequestRefused(
            f"Part {part.index} is {media_type or 'without a media type'}; every part must be application/dicom "
            "(one whole DICOM file per part). Nothing was stored.",
            status=415,
            code="unsupported_media_type",
        )
    encoding = part.headers.get("content-transfer-encoding", "binary").strip().lower()
    if encoding not in ("binary", "8bit", "7bit"):
        raise RequestRefused(
            f"Part {part.index} has Content-Transfer-Encoding {encoding}; send the DICOM bytes as they are (binary). Nothing was stored.",
            status=415,
            code="unsupported_media_type",
        )


# --- Each part: identify, check the target study, ingest ------------------------------------------------------------


def _store(request, principal, parts: list[SpooledPart], target_study: str | None) -> tuple[list[IngestResult], list[Failure]]:
    address = audit.client_address(request)
    stored: list[IngestResult] = []
    failures: list[Failure] = []
    cache = IngestCache()  # the parts of one request mostly share patient, study and series
    try:
        for part in parts:
            identity = _identify(part)
            try:
                stored.append(_store_part(part, identity, principal=principal, target_study=target_study, address=address, cache=cache))
            except IngestRefused as refusal:
                failures.append(Failure(part=part, identity=identity, refusal=refusal))
            finally:
                os.unlink(part.path)  # free the disk part by part, not only at the end of a large request
    finally:
        record_batch(principal, stored, source=SOURCE, address=address, refused=len(failures))
    return stored, failures


def _store_part(
    part: SpooledPart, identity: PartIdentity, *, principal, target_study: str | None, address: str, cache: IngestCache
) -> IngestResult:
    if target_study and identity.study_instance_uid not in ("", target_study):
        refusal = NotInTargetStudy(
            f"This instance belongs to study {identity.study_instance_uid}, not to study {target_study} "
            "named in the request URL; it was not stored."
        )
        record_refusal(principal, refusal, source=SOURCE, address=address)  # audited like the ingest service's refusals
        raise refusal
    return ingest_instance(principal=principal, path=part.path, source=SOURCE, address=address, cache=cache)


def _identify(part: SpooledPart) -> PartIdentity:
    """The UIDs of a part read before ingest: to check the target study and to name a refused instance in the answer."""
    try:
        ds = pydicom.dcmread(
            part.path,
            stop_before_pixels=True,
            defer_size=1024,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
        )
    except Exception:  # not DICOM, or unreadable: the ingest service says precisely why
        return PartIdentity()
    meta = getattr(ds, "file_meta", None)
    return PartIdentity(
        sop_class_uid=_valid_uid(ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)),
        sop_instance_uid=_valid_uid(ds.get("SOPInstanceUID") or (meta.get("MediaStorageSOPInstanceUID") if meta else None)),
        study_instance_uid=_valid_uid(ds.get("StudyInstanceUID")),
    )


def _valid_uid(value) -> str:
    try:
        return check_uid("UID", value)
    except IngestRefused:
        return ""


# --- The answer: Store Instances Response Module (PS3.18 Annex I) ---------------------------------------------------------


def _status(stored: list[IngestResult], failures: list[Failure]) -> int:
    """PS3.18 Table 10.5.3-1: 200 all stored, 202 some failed; when none was stored, the one reason's status, else 409."""
    if not failures:
        return 200
    if stored:
        return 202
    statuses = {failure.refusal.http_status for failure in failures}
    if any(status >= 500 for status in statuses):
        return max(statuses)  # the archive's own trouble (storage down): worth retrying, unlike a conflict
    if len(statuses) == 1:
        return statuses.pop()  # all conflicts 409, all unreadable 400, all too large 413
    return 409  # "unable to store any Instances for a mixture of reasons"


def _store_response(request, target_study: str | None, stored: list[IngestResult], failures: list[Failure]) -> dict:
    referenced = []
    for result in stored:
        instance = result.instance
        study_uid = instance.study.study_instance_uid
        referenced.append(
            dataset(
                {
                    REFERENCED_SOP_CLASS_UID: element("UI", instance.sop_class_uid),
                    REFERENCED_SOP_INSTANCE_UID: element("UI", instance.sop_instance_uid),
                    RETRIEVE_URL: element(
                        "UR", retrieve_url(request, study_uid, instance.series.series_instance_uid, instance.sop_instance_uid)
                    ),
                }
            )
        )
    # An instance already stored with the same bytes is a plain success: none of the Warning Reasons of PS3.18 Table I.2-1
    # (coercion B000, elements discarded B006, data set does not match B007) applies, and the archive keeps it as received.
    failed = [_failed_item(failure) for failure in failures]
    # Retrieve URL (0008,1190) of the study is Type 2: the target study, or the one study everything stored belongs to.
    studies = {result.instance.study.study_instance_uid for result in stored}
    study_uid = target_study or (studies.pop() if len(studies) == 1 else "")
    attributes = {RETRIEVE_URL: element("UR", retrieve_url(request, study_uid) if study_uid else None)}
    if failed:
        attributes[FAILED_SOP_SEQUENCE] = sequence(failed)
    if referenced:
        attributes[REFERENCED_SOP_SEQUENCE] = sequence(referenced)
    return dataset(attributes)


def _failed_item(failure: Failure) -> dict:
    refusal, identity = failure.refusal, failure.identity
    # The SOP Instance Reference Macro is Type 1, but a part that is not DICOM has no UIDs to give: they are left out,
    # and the part number tells the sender which one it was.
    attributes = {
        REFERENCED_SOP_CLASS_UID: element("UI", identity.sop_class_uid or None),
        REFERENCED_SOP_INSTANCE_UID: element("UI", identity.sop_instance_uid or None),
        FAILURE_REASON: element("US", refusal.dicom_status),
        PRIVATE_CREATOR[0]: element("LO", PRIVATE_CREATOR[1]),
        FAILURE_TEXT: element("LT", refusal.reason),
        FAILURE_CODE: element("LO", refusal.code),
        FAILURE_PART: element("US", failure.part.index),
    }
    return dataset({tag: value for tag, value in attributes.items() if "Value" in value})
