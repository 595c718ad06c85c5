"""Zip downloads of a study or one of its series: the DICOM files exactly as stored, streamed, and their audit event.

The zip is "stored" (no compression): pixel data is dense or already compressed, and a stored zip's length is known
before its first byte, so the answer carries a Content-Length and the browser shows real progress. Each file is read
from the archive storage in chunks only when the stream reaches it (images.retrieve), so no zip and no whole study is
ever held in memory. Names inside the zip are built from sanitized values only:
`<PatientID>/<StudyInstanceUID>/<SeriesNumber>-<SeriesInstanceUID>/<SOPInstanceUID>.dcm`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from zipstream import ZIP_STORED, ZipStream

from subscribers import audit
from subscribers.access import NotVisible, Principal

from . import retrieve
from .models import Instance, Series, Study

# Anything but these becomes "_": no separators, no drive letters, no control or shell characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows refuses as a file or folder, with or without an extension.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}
MAX_COMPONENT = 100
# Only what the zip needs of each instance: never the metadata JSON, which can be large.
_FIELDS = (
    "pk",
    "sop_instance_uid",
    "storage_name",
    "size_bytes",
    "transfer_syntax_uid",
    "series__series_number",
    "series__series_instance_uid",
)


def safe_component(value: str | None, fallback: str) -> str:
    """One path component that cannot climb, hide or name a device: letters, digits, '.', '_' and '-', no leading or
    trailing dot, never '.' or '..'; `fallback` when nothing is left."""
    cleaned = _UNSAFE.sub("_", value or "").strip("._-")[:MAX_COMPONENT].rstrip("._-")
    if not cleaned:
        return fallback
    if cleaned.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        cleaned = f"_{cleaned}"
    return cleaned


def member_name(*, patient_id: str, study_uid: str, series_number: int | None, series_uid: str, sop_uid: str) -> str:
    series_folder = safe_component(series_uid, "series")
    if series_number is not None:
        series_folder = f"{series_number}-{series_folder}"
    return "/".join(
        (
            safe_component(patient_id, "no-patient-id"),
            safe_component(study_uid, "study"),
            series_folder,
            f"{safe_component(sop_uid, 'instance')}.dcm",
        )
    )


@dataclass
class ZipDownload:
    """A zip ready to stream: iterate `chunks` once; `size` is its exact length in bytes."""

    study: Study
    series: Series | None
    filename: str
    chunks: Iterable[bytes]
    size: int
    count: int
    content_bytes: int


def _stored_chunks(instance: Instance):
    """The stored bytes of one instance; storage is opened only when the zip stream reaches this member."""
    return retrieve.instance_chunks(retrieve.PlannedInstance(instance, instance.transfer_syntax_uid, as_stored=True, preference=0))


def prepare(principal: Principal, *, study_uid: str, series_uid: str = "") -> ZipDownload:
    """The zip of a study the caller may see, or of one of its series; NotVisible when there is nothing to give."""
    study, instances = retrieve.visible_instances(principal, study_uid=study_uid, series_uid=series_uid)
    found = list(instances.only(*_FIELDS))
    if not found:
        raise NotVisible()
    stream = ZipStream(compress_type=ZIP_STORED, sized=True)
    patient_id = study.patient.patient_id
    for instance in found:
        name = member_name(
            patient_id=patient_id,
            study_uid=study.study_instance_uid,
            series_number=instance.series.series_number,
            series_uid=instance.series.series_instance_uid,
            sop_uid=instance.sop_instance_uid,
        )
        stream.add(_stored_chunks(instance), name, size=instance.size_bytes)
    series = found[0].series if series_uid else None
    date = study.study_date.strftime("%Y%m%d") if study.study_date else "undated"
    stem = f"{safe_component(patient_id, 'no-patient-id')}_{date}_"
    if series is None:
        filename = f"{stem}{safe_component(study.study_instance_uid, 'study')}.zip"
    else:
        number = f"series-{series.series_number}_" if series.series_number is not None else "series_"
        filename = f"{stem}{number}{safe_component(series.series_instance_uid, 'series')}.zip"
    return ZipDownload(
        study=study,
        series=series,
        filename=filename,
        chunks=stream,
        size=len(stream),
        count=len(found),
        content_bytes=sum(instance.size_bytes for instance in found),
    )


def record_download(principal: Principal, download: ZipDownload, *, address: str = "") -> None:
    """One audit event per download: who took which study (or series), how many files and bytes."""
    study = download.study
    detail = {
        "level": "series" if download.series else "study",
        "study_instance_uid": study.study_instance_uid,
        "count": download.count,
        "bytes": download.content_bytes,
        "filename": download.filename,
    }
    if download.series is not None:
        detail["series_instance_uid"] = download.series.series_instance_uid
    if study.institution_id != principal.institution_id:
        detail["shared_by_institution"] = study.institution_id
    audit.record(
        action="study.download",
        principal=principal,
        address=address,
        object_type="images.study",
        object_id=study.study_instance_uid,
        object_repr=str(study),
        **detail,
    )
