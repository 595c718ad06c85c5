"""The one ingest service: every way in (C-STORE, STOW-RS, upload, zip, import) stores objects through here.

Order of work: check the caller, check the size, hash, parse and validate, decide (new, same
bytes again, conflict), write the bytes durably under a name built from validated UIDs, then
index in one transaction. Success is reported only after both are durable; any failure leaves
storage and index as they were.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from pydicom.valuerep import PersonName

from subscribers import audit
from subscribers.access import Principal
from subscribers.models import AuditEvent, Role

from .. import conditions as imaging_conditions
from ..errors import ConflictingInstance, IngestRefused, NotAuthorized, StorageFailed, TooLarge
from ..models import ArchivePolicy, Instance, Patient, Series, Study
from ..storage import delete_quietly, durable_write, instance_name
from .validation import ParsedObject, metadata_json, parse, parse_da, parse_tm


@dataclass
class IngestResult:
    status: str  # "stored", "already_stored", "replaced"
    instance: Instance

    @property
    def created(self) -> bool:
        return self.status != "already_stored"


class IngestCache:
    """Index rows already known within one batch (an association, a STOW-RS request, an import).

    The second and later instances of a series then skip the patient, study and series look-ups.
    Rows enter the cache only once their transaction has committed; a stale entry (a row deleted
    meanwhile) makes the ingest clear the cache and index again from the database.
    """

    def __init__(self):
        self.rows: dict[str, tuple[Patient, Study, Series]] = {}  # by SeriesInstanceUID

    def remember(self, patient: Patient, study: Study, series: Series) -> None:
        self.rows[series.series_instance_uid] = (patient, study, series)

    def lookup(self, parsed: ParsedObject, patient_key: tuple) -> tuple[Patient, Study, Series] | None:
        rows = self.rows.get(parsed.series_instance_uid)
        if rows is None:
            return None
        patient, study, _ = rows
        if study.study_instance_uid != parsed.study_instance_uid or (patient.patient_id, patient.issuer_of_patient_id) != patient_key:
            return None  # not the same context: let the database decide (and refuse a series moving study)
        return rows

    def clear(self) -> None:
        self.rows.clear()

    def __bool__(self) -> bool:
        return bool(self.rows)


def max_instance_bytes() -> int:
    return settings.DICOM_MAX_INSTANCE_BYTES


def check_may_register(principal: Principal) -> None:
    if principal.institution is None or not principal.institution.is_active:
        raise NotAuthorized("Your institution is not active; it cannot send images.")
    if not principal.has_role(Role.REGISTER):
        raise NotAuthorized("Sending images needs the 'Register images' role (or an AE title allowed to send).")


def ingest_instance(
    *,
    principal: Principal,
    data: bytes | None = None,
    path: str | os.PathLike | None = None,
    fileobj: BinaryIO | None = None,
    source: str,
    address: str = "",
    audit_refusals: bool = True,
    cache: IngestCache | None = None,
) -> IngestResult:
    """Store one Part 10 object for principal's institution. Raises IngestRefused (nothing changed).

    Callers ingesting a batch pass one IngestCache for the whole batch.
    """
    try:
        return _ingest(principal=principal, data=data, path=path, fileobj=fileobj, source=source, cache=cache)
    except IngestRefused as refusal:
        if audit_refusals:
            record_refusal(principal, refusal, source=source, address=address)
        raise


def record_refusal(principal: Principal, refusal: IngestRefused, *, source: str, address: str = "", name: str = "") -> None:
    audit.record(
        action="instance.refused",
        principal=principal,
        outcome=AuditEvent.Outcome.DENIED if isinstance(refusal, NotAuthorized) else AuditEvent.Outcome.FAILURE,
        address=address,
        reason=refusal.reason,
        code=refusal.code,
        source=source,
        **({"name": name[:200]} if name else {}),
    )


def record_batch(principal: Principal, results: list[IngestResult], *, source: str, address: str = "", refused: int = 0) -> None:
    """One audit event for a batch (an association, a STOW-RS request, an upload, an import)."""
    if not results and not refused:
        return
    counts = Counter(r.status for r in results)
    studies = sorted({r.instance.study.study_instance_uid for r in results})
    audit.record(
        action="instances.store",
        principal=principal,
        address=address,
        outcome=AuditEvent.Outcome.SUCCESS if results else AuditEvent.Outcome.FAILURE,
        object_type="images.study",
        object_id=studies[0] if len(studies) == 1 else "",
        source=source,
        refused=refused,
        studies=studies[:50],
        **dict(counts),
    )


def _open(data, path, fileobj) -> tuple[BinaryIO, int, bool]:
    if data is not None:
        return io.BytesIO(data), len(data), True
    if path is not None:
        return open(path, "rb"), os.path.getsize(path), True
    fileobj.seek(0, os.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(0)
    return fileobj, size, False


def _dataset_offset(head: bytes) -> int | None:
    """Where the dataset starts in a Part 10 file: after the preamble, 'DICM' and the group 0002 file meta."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    position = 132
    while position + 8 <= len(head):
        group = struct.unpack_from("<H", head, position)[0]
        if group != 0x0002:
            return position
        vr = head[position + 4 : position + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"):
            position += 12 + struct.unpack_from("<I", head, position + 8)[0]
        else:
            position += 8 + struct.unpack_from("<H", head, position + 6)[0]
    return None


def _hashes(fp: BinaryIO) -> tuple[str, str]:
    """SHA-256 of the whole file (what storage and backups verify) and of the dataset alone.

    Two ways in write different file meta for the same object (C-STORE, STOW-RS, another sender);
    "the same object again" is decided on the dataset, so the header does not make a conflict.
    """
    file_digest, dataset_digest = hashlib.sha256(), hashlib.sha256()
    fp.seek(0)
    head = fp.read(1 << 16)
    offset = _dataset_offset(head)
    chunk, seen = head, 0
    while chunk:
        file_digest.update(chunk)
        start = 0 if offset is None else max(0, offset - seen)
        if start < len(chunk):
            dataset_digest.update(chunk[start:] if start else chunk)
        seen += len(chunk)
        chunk = fp.read(1 << 20)
    fp.seek(0)
    return file_digest.hexdigest(), dataset_digest.hexdigest()


def _ingest(*, principal, data, path, fileobj, source, cache) -> IngestResult:
    check_may_register(principal)
    institution = principal.institution
    fp, size, owned = _open(data, path, fileobj)
    try:
        if size > max_instance_bytes():
            raise TooLarge(f"The archive accepts at most {max_instance_bytes():,} bytes per object; this one is larger.")
        sha256, dataset_sha256 = _hashes(fp)
        parsed = parse(fp, size)
        known = Instance.objects.filter(institution=institution, sop_instance_uid=parsed.sop_instance_uid).values_list("pk", flat=True)
        existing = Instance.objects.select_related("study").get(pk=known[0]) if known else None
        if existing is not None and existing.dataset_sha256 == dataset_sha256:
            return IngestResult("already_stored", existing)
        if existing is not None and _policy(institution) != ArchivePolicy.OnConflict.KEEP_NEWEST:
            audit.record(action="instance.conflict", principal=principal, obj=existing, outcome=AuditEvent.Outcome.FAILURE, source=source)
            raise ConflictingInstance(
                f"SOP Instance {parsed.sop_instance_uid} is already stored with different content; "
                "send it under a new SOP Instance UID, or ask your admin to set the archive to keep the newest."
            )
        name = instance_name(
            institution_id=institution.pk,
            study_uid=parsed.study_instance_uid,
            series_uid=parsed.series_instance_uid,
            sop_uid=parsed.sop_instance_uid,
            sha256=sha256,
        )
        try:
            durable_write(name, data if data is not None else fp)
        except Exception as exc:  # OSError locally; botocore errors from an object store
            raise StorageFailed(
                f"The archive could not store the object ({getattr(exc, 'strerror', None) or exc}); nothing was kept. Try again later."
            ) from None
        index = functools.partial(
            _index,
            institution=institution,
            parsed=parsed,
            name=name,
            sha256=sha256,
            dataset_sha256=dataset_sha256,
            size=size,
            source=source,
            replacing=existing,
        )
        try:
            try:
                result = index(cache=cache)
            except (IntegrityError, ObjectDoesNotExist):
                if not cache:
                    raise
                cache.clear()  # a cached row went away meanwhile: index again from the database
                result = index(cache=cache)
        except BaseException:
            if not Instance.objects.filter(storage_name=name).exists():
                delete_quietly(name)
            raise
        if result.status == "replaced":
            old_name = existing.storage_name
            transaction.on_commit(lambda: delete_quietly(old_name))
        return result
    finally:
        if owned:
            fp.close()


def _policy(institution) -> str:
    policy = ArchivePolicy.objects.filter(institution=institution).values_list("on_conflict", flat=True).first()
    return policy or ArchivePolicy.OnConflict.REJECT


def _text(ds, keyword: str, limit: int) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    # A PersonName iterates over its characters: it is one value, not a multi-value (ReferringPhysicianName too).
    if isinstance(value, list | tuple) or hasattr(value, "__iter__") and not isinstance(value, str | bytes | PersonName):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def _int(ds, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _get_or_create(model, lookup: dict, defaults: dict):
    """get_or_create that survives a concurrent insert of the same row (another association)."""
    try:
        with transaction.atomic():
            return model.objects.get_or_create(**lookup, defaults=defaults)
    except IntegrityError:
        return model.objects.get(**lookup), False


def _index(
    *,
    institution,
    parsed: ParsedObject,
    name: str,
    sha256: str,
    dataset_sha256: str,
    size: int,
    source: str,
    replacing: Instance | None,
    cache: IngestCache | None = None,
) -> IngestResult:
    ds = parsed.dataset
    instance_conditions = imaging_conditions.extract(ds)
    metadata = metadata_json(ds)
    now = timezone.now()
    patient_key = (_text(ds, "PatientID", 64), _text(ds, "IssuerOfPatientID", 64))
    cached = cache.lookup(parsed, patient_key) if cache else None
    with transaction.atomic():
        if cached is not None:
            patient, study, series = cached
            series_created = False
        else:
            patient, study, series, series_created = _index_rows(ds, institution, parsed, patient_key, instance_conditions)
        result = _index_instance(
            institution=institution,
            parsed=parsed,
            study=study,
            series=series,
            series_created=series_created,
            size=size,
            now=now,
            replacing=replacing,
            fields={
                "sop_class_uid": parsed.sop_class_uid,
                "instance_number": _int(ds, "InstanceNumber"),
                "transfer_syntax_uid": parsed.transfer_syntax_uid,
                "rows": _int(ds, "Rows"),
                "columns": _int(ds, "Columns"),
                "number_of_frames": _int(ds, "NumberOfFrames") or 1,
                "bits_allocated": _int(ds, "BitsAllocated"),
                "photometric_interpretation": _text(ds, "PhotometricInterpretation", 16),
                "size_bytes": size,
                "sha256": sha256,
                "dataset_sha256": dataset_sha256,
                "storage_name": name,
                "conditions": instance_conditions,
                "metadata": metadata,
                "source": source,
                # As received: a replaced ("keep newest") instance forgets its predecessor's compression at rest.
                "original_transfer_syntax_uid": "",
                "original_size_bytes": None,
                "original_sha256": "",
                "compressed_at": None,
                "compression_skipped_syntax": "",
            },
        )
    if cache is not None and result.status == "stored":
        transaction.on_commit(lambda: cache.remember(patient, study, series))
    return result


def _index_rows(ds, institution, parsed: ParsedObject, patient_key: tuple, instance_conditions: dict):
    """Find or create the patient, study and series rows of an object, in the caller's transaction."""
    patient, _ = _get_or_create(
        Patient,
        {"institution": institution, "patient_id": patient_key[0], "issuer_of_patient_id": patient_key[1]},
        {
            "patient_name": _text(ds, "PatientName", 324),
            "patient_name_search": _text(ds, "PatientName", 324).upper(),
            "patient_birth_date": parse_da(ds.get("PatientBirthDate")),
            "patient_sex": _text(ds, "PatientSex", 16),
        },
    )
    study, _ = _get_or_create(
        Study,
        {"institution": institution, "study_instance_uid": parsed.study_instance_uid},
        {
            "patient": patient,
            "study_date": parse_da(ds.get("StudyDate")),
            "study_time": parse_tm(ds.get("StudyTime")),
            "accession_number": _text(ds, "AccessionNumber", 64),
            "study_id": _text(ds, "StudyID", 16),
            "study_description": _text(ds, "StudyDescription", 200),
            "referring_physician_name": _text(ds, "ReferringPhysicianName", 324),
        },
    )
    modality = _text(ds, "Modality", 16)
    series, series_created = _get_or_create(
        Series,
        {"institution": institution, "series_instance_uid": parsed.series_instance_uid},
        {
            "study": study,
            "modality": modality,
            "series_number": _int(ds, "SeriesNumber"),
            "series_description": _text(ds, "SeriesDescription", 200),
            "body_part_examined": _text(ds, "BodyPartExamined", 16),
            "series_date": parse_da(ds.get("SeriesDate")),
            "series_time": parse_tm(ds.get("SeriesTime")),
            "acquiring_institution_name": _text(ds, "InstitutionName", 64),
            "manufacturer": _text(ds, "Manufacturer", 64),
            "manufacturer_model_name": _text(ds, "ManufacturerModelName", 64),
            "station_name": _text(ds, "StationName", 16),
            "conditions": instance_conditions,
        },
    )
    if series.study_id != study.pk:
        raise ConflictingInstance(
            f"Series {parsed.series_instance_uid} already belongs to another study; a series cannot move between studies."
        )
    return patient, study, series, series_created


def _index_instance(*, institution, parsed, study, series, series_created, size, now, replacing, fields) -> IngestResult:
    """Insert (or replace) the instance row and keep the series and study counters right."""
    if replacing is not None:
        replaced = Instance.objects.select_for_update().get(pk=replacing.pk)
        if replaced.series_id != series.pk:
            raise ConflictingInstance("The newer object names another series than the one stored; it cannot replace it.")
        delta = size - replaced.size_bytes
        for key, value in fields.items():
            setattr(replaced, key, value)
        replaced.save()
        Study.objects.filter(pk=study.pk).update(size_bytes=F("size_bytes") + delta, last_received_at=now)
        Series.objects.filter(pk=series.pk).update(size_bytes=F("size_bytes") + delta)
        return IngestResult("replaced", replaced)
    try:
        with transaction.atomic():
            instance = Instance.objects.create(
                institution=institution, study=study, series=series, sop_instance_uid=parsed.sop_instance_uid, **fields
            )
    except IntegrityError:
        # The same object arrived on another association a moment ago.
        other = Instance.objects.get(institution=institution, sop_instance_uid=parsed.sop_instance_uid)
        if other.dataset_sha256 == fields["dataset_sha256"]:
            return IngestResult("already_stored", other)
        raise ConflictingInstance(f"SOP Instance {parsed.sop_instance_uid} is already stored with different content.") from None
    Series.objects.filter(pk=series.pk).update(number_of_instances=F("number_of_instances") + 1, size_bytes=F("size_bytes") + size)
    study_update = {"number_of_instances": F("number_of_instances") + 1, "size_bytes": F("size_bytes") + size, "last_received_at": now}
    if series_created:
        modalities = sorted({m for m in Series.objects.filter(study=study).values_list("modality", flat=True) if m})
        study_update.update(number_of_series=F("number_of_series") + 1, modalities_in_study="\\".join(modalities))
    Study.objects.filter(pk=study.pk).update(**study_update)
    instance.study = study
    return IngestResult("stored", instance)
