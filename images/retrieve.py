"""Retrieving stored instances (WADO-RS, WADO-URI): which ones the caller may have, in which transfer syntax, their bytes,
frames, bulk data and metadata, and the audit event of each retrieval.

Bytes are read from storage one instance at a time, in chunks; a converted instance waits in a spooled temporary file,
so no study is ever held in memory. Every lookup starts from the scoped selectors.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, QuerySet

from subscribers import audit
from subscribers.access import NotVisible, Principal

from . import selectors
from .frames import Frame, read_bulk_value, read_frames
from .models import Instance, Study
from .storage import open_instance
from .transcode import AS_STORED, PIXEL_DATA, SPOOL_BYTES, PixelDescription, syntax_name, transcode, unavailable_reason

CHUNK_BYTES = 1 << 20
METADATA_CHUNK = 200  # instances read from the database at a time when streaming metadata
AVAILABLE_TRANSFER_SYNTAX = "00083002"


class NotAcceptable(Exception):
    """No acceptable answer can be produced (406); `reason` names what was asked and what can be given."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidFrames(Exception):
    """The frame list does not name frames of this instance (400, as PS3.18 9.5.2.x and 8.2.7 answer a bad frame number)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PlannedInstance:
    """One instance to send: in its stored bytes, or converted to `transfer_syntax`; `preference` is the index of the
    caller's preference it satisfies."""

    instance: Instance
    transfer_syntax: str
    as_stored: bool
    preference: int


# --- Which instances ------------------------------------------------------------------------------------------------


def visible_instances(principal: Principal, *, study_uid: str, series_uid: str = "", sop_uid: str = "") -> tuple[Study, QuerySet[Instance]]:
    """The visible study (NotVisible otherwise) and its instances, of one series or one instance, in series and
    instance order."""
    study = selectors.get_study(principal, study_uid)
    instances = selectors.instances_visible_to(principal).filter(study=study).select_related("series")
    if series_uid:
        instances = instances.filter(series__series_instance_uid=series_uid)
    if sop_uid:
        instances = instances.filter(sop_instance_uid=sop_uid)
    order = (F("series__series_number").asc(nulls_last=True), "series_id", F("instance_number").asc(nulls_last=True), "pk")
    return study, instances.order_by(*order)


def find_instances(principal: Principal, *, study_uid: str, series_uid: str = "", sop_uid: str = "") -> tuple[Study, list[Instance]]:
    """The instances to retrieve, each with its pixel description; NotVisible when there are none.

    Two queries whatever their number: the instances without their metadata, then the metadata read a few hundred at
    a time and kept only as the pixel description that decides the transfer syntax.
    """
    study, instances = visible_instances(principal, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    found = list(instances.defer("metadata"))
    if not found:
        raise NotVisible()
    rows = instances.values_list("pk", "transfer_syntax_uid", "metadata").iterator(chunk_size=METADATA_CHUNK)
    descriptions = {pk: PixelDescription.of_metadata(syntax, metadata) for pk, syntax, metadata in rows}
    for instance in found:
        instance.pixel_description = descriptions[instance.pk]
    return study, found


def describe(instance: Instance) -> PixelDescription:
    description = getattr(instance, "pixel_description", None)
    return description or PixelDescription.of_metadata(instance.transfer_syntax_uid, instance.metadata)


# --- Whole instances ------------------------------------------------------------------------------------------------


def plan(instances: list[Instance], preferences: list[str]) -> list[PlannedInstance]:
    """For each instance the first preferred transfer syntax ("*" = as stored) it can be given in (PS3.18 8.7.8.2: the
    syntax may differ from part to part). Decided from the index alone, before a byte is sent; NotAcceptable otherwise."""
    planned = []
    for instance in instances:
        description = describe(instance)
        refusals = []
        for index, syntax in enumerate(preferences):
            reason = unavailable_reason(description, syntax)
            if reason is None:
                as_stored = syntax in (AS_STORED, instance.transfer_syntax_uid)
                planned.append(PlannedInstance(instance, instance.transfer_syntax_uid if as_stored else syntax, as_stored, index))
                break
            refusals.append(f"{syntax_name(syntax)}: {reason}")
        else:
            raise NotAcceptable(
                f"Instance {instance.sop_instance_uid} cannot be given in any transfer syntax asked for ({'; '.join(refusals)})."
            )
    return planned


def instance_chunks(planned: PlannedInstance) -> Iterator[bytes]:
    """The bytes of one planned instance, read (and converted) only when the response gets to it."""
    with open_instance(planned.instance.storage_name) as stored:
        if planned.as_stored:
            while chunk := stored.read(CHUNK_BYTES):
                yield chunk
            return
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=settings.FILE_UPLOAD_TEMP_DIR) as converted:
            transcode(stored, target=planned.transfer_syntax, out=converted)
            converted.seek(0)
            while chunk := converted.read(CHUNK_BYTES):
                yield chunk


# --- Frames and bulk data -------------------------------------------------------------------------------------------


def check_frames(instance: Instance, numbers: list[int]) -> None:
    description = describe(instance)
    if not description.has_pixel_data:
        raise InvalidFrames(f"Instance {instance.sop_instance_uid} is not an image; it has no frames.")
    last = description.number_of_frames
    beyond = [number for number in numbers if number > last]
    if beyond:
        frames = "frame" if last == 1 else "frames"
        raise InvalidFrames(f"Instance {instance.sop_instance_uid} has {last} {frames}; there is no frame {', '.join(map(str, beyond))}.")


def frames(instance: Instance, numbers: list[int], *, as_stored: bool) -> Iterator[Frame]:
    """Frames of one instance, opened from storage when the response gets to them."""
    with open_instance(instance.storage_name) as stored:
        yield from read_frames(stored, describe(instance), numbers, as_stored=as_stored)


def bulk_value(instance: Instance, tag: int) -> bytes | None:
    """The value of a bulk data element other than Pixel Data (which is retrieved as frames)."""
    with open_instance(instance.storage_name) as stored:
        return read_bulk_value(stored, tag)


# --- Metadata -------------------------------------------------------------------------------------------------------


def metadata(instances: QuerySet[Instance], *, url_of: Callable[[Instance], str]) -> Iterator[dict]:
    """The stored DICOM JSON of each instance (no file is opened), BulkDataURIs made absolute under url_of(instance),
    with the Pixel Data as a bulk data reference and the stored transfer syntax as Available Transfer Syntax UID.

    Read from the database a few hundred instances at a time, so a study of thousands is never in memory at once.
    """
    for instance in instances.iterator(chunk_size=METADATA_CHUNK):
        url = url_of(instance)
        attributes = _absolute_bulk_uris(instance.metadata, url)
        attributes.setdefault(AVAILABLE_TRANSFER_SYNTAX, {"vr": "UI", "Value": [instance.transfer_syntax_uid]})
        description = describe(instance)
        if description.has_pixel_data:
            vr = "OB" if description.compressed or description.bits_allocated <= 8 else "OW"
            attributes.setdefault(f"{PIXEL_DATA:08X}", {"vr": vr, "BulkDataURI": f"{url}/bulkdata/{PIXEL_DATA:08X}"})
        yield dict(sorted(attributes.items()))


def _absolute_bulk_uris(attributes: dict, url: str) -> dict:
    rewritten = {}
    for tag, element in attributes.items():
        element = dict(element)
        uri = element.get("BulkDataURI")
        if uri and "://" not in uri:
            element["BulkDataURI"] = f"{url}/{uri.lstrip('/')}"
        if element.get("vr") == "SQ" and element.get("Value"):
            element["Value"] = [_absolute_bulk_uris(item, url) for item in element["Value"]]
        rewritten[tag] = element
    return rewritten


# --- Audit ----------------------------------------------------------------------------------------------------------


def record_retrieve(
    principal: Principal,
    *,
    study: Study,
    level: str,
    uid: str,
    resource: str,
    count: int,
    transfer_syntaxes: list[str] | None = None,
    address: str = "",
    **detail,
) -> None:
    """One audit event per retrieval request, whatever the number of instances in it."""
    if getattr(study, "is_shared", False):
        detail["shared_by_institution"] = study.institution_id
    audit.record(
        action="dicomweb.retrieve",
        principal=principal,
        address=address,
        object_type="images.study",
        object_id=study.study_instance_uid,
        object_repr=str(study),
        level=level,
        uid=uid,
        resource=resource,
        count=count,
        transfer_syntax=sorted(set(transfer_syntaxes)) if transfer_syntaxes else [],
        **detail,
    )
