"""The manifest of a backup set: one JSON document naming every file with its SHA-256, size and UIDs, and the index
rows (patient, study, series, instance) needed to rebuild the archive's records from the backup target alone.

The manifest is written after its blobs are durable and is itself hashed (BackupSet.manifest_sha256): a set whose
manifest no longer has that hash is damaged. An instance's DICOM JSON metadata and imaging conditions are not
repeated: they are read from the file's own header, as ingest does again on restore (and would make the manifest
ten times larger); the series' imaging conditions are kept.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, time
from decimal import Decimal

from django.db.models import Model

from images.models import Patient, Series, Study

from ..models import BackupObject, BackupSet, Contract

FORMAT = "medarchive-backup-set"
FORMAT_VERSION = 1
CHUNK = 500

PATIENT_FIELDS = ("patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date", "patient_sex")
STUDY_FIELDS = (
    "study_instance_uid",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
    "modalities_in_study",
    "number_of_series",
    "number_of_instances",
    "size_bytes",
    "received_at",
    "last_received_at",
)
SERIES_FIELDS = (
    "series_instance_uid",
    "modality",
    "series_number",
    "series_description",
    "body_part_examined",
    "series_date",
    "series_time",
    "acquiring_institution_name",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
    "conditions",
    "number_of_instances",
    "size_bytes",
    "received_at",
)
INSTANCE_FIELDS = (
    "sop_class_uid",
    "sop_instance_uid",
    "instance_number",
    "transfer_syntax_uid",
    "rows",
    "columns",
    "number_of_frames",
    "bits_allocated",
    "photometric_interpretation",
    "size_bytes",
    "sha256",
    "dataset_sha256",
    "source",
    "received_at",
)

# Instance fields each file entry carries itself (so they are not repeated in its "instance" row).
ENTRY_FIELDS = {"sop_class_uid", "sop_instance_uid", "transfer_syntax_uid", "size_bytes", "sha256"}


def _plain(value):
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _rows(model: type[Model], ids, fields) -> dict[int, dict]:
    ids = sorted(set(ids))
    found: dict[int, dict] = {}
    for start in range(0, len(ids), CHUNK):
        for row in model.objects.filter(pk__in=ids[start : start + CHUNK]).values("pk", *fields):
            found[row.pop("pk")] = {name: _plain(value) for name, value in row.items()}
    return found


def build(
    *, contract: Contract, backup_object: BackupObject, backup_set: BackupSet, snapshot_at: datetime, files: list, blob_names: dict
) -> dict:
    """The manifest document. files: the set's FileRows (write.py) in a stable order, each with the instance's
    INDEX_FIELDS values in `index`; blob_names: {sha256: name in the target}."""
    series = _rows(Series, {f.series_id for f in files}, ("study_id", *SERIES_FIELDS))
    studies = _rows(Study, {f.study_id for f in files}, ("patient_id", *STUDY_FIELDS))
    patients = _rows(Patient, (row["patient_id"] for row in studies.values()), PATIENT_FIELDS)
    institution = contract.institution
    # The entry carries the identity, hash and size; "instance" the rest of the instance's index row.
    position = {name: INSTANCE_FIELDS.index(name) for name in INSTANCE_FIELDS}
    rest = [(name, position[name]) for name in INSTANCE_FIELDS if name not in ENTRY_FIELDS]
    sop_class, syntax, received = position["sop_class_uid"], position["transfer_syntax_uid"], position["received_at"]
    entries = []
    for f in files:
        values = f.index
        index = {name: values[i] for name, i in rest}
        index["received_at"] = _plain(values[received])
        entries.append(
            {
                "name": blob_names[f.sha256],
                "sha256": f.sha256,
                "size": f.size,
                "sop_instance_uid": f.sop_instance_uid,
                "series_instance_uid": f.series_instance_uid,
                "study_instance_uid": f.study_instance_uid,
                "sop_class_uid": values[sop_class],
                "transfer_syntax_uid": values[syntax],
                "patient_key": f.patient_key,
                "acquiring_institution": f.acquiring_institution,
                "instance": index,
            }
        )
    series_by_uid = {}
    for row in series.values():
        study = studies.get(row.pop("study_id"))
        series_by_uid[row["series_instance_uid"]] = {**row, "study_instance_uid": study["study_instance_uid"] if study else ""}
    studies_by_uid = {}
    for row in studies.values():
        patient = patients.get(row.pop("patient_id"))
        key = f"{patient['patient_id']}|{patient['issuer_of_patient_id']}" if patient else ""
        studies_by_uid[row["study_instance_uid"]] = {**row, "patient_key": key}
    patients_by_key = {f"{row['patient_id']}|{row['issuer_of_patient_id']}": row for row in patients.values()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "set_id": backup_set.pk,
        "created_at": _plain(backup_set.created_at),
        "snapshot_at": _plain(snapshot_at),
        "contract": {"id": contract.pk, "title": str(contract), "mode": contract.mode, "target": backup_set.target},
        "institution": {"id": institution.pk, "slug": institution.slug, "name": institution.name},
        "mode": contract.mode,
        "object": {"id": backup_object.pk, "kind": backup_object.kind, "key": backup_object.key, "label": backup_object.label},
        "totals": {"files": len(entries), "bytes": sum(e["size"] for e in entries)},
        "patients": [patients_by_key[key] for key in sorted(patients_by_key)],
        "studies": [studies_by_uid[uid] for uid in sorted(studies_by_uid)],
        "series": [series_by_uid[uid] for uid in sorted(series_by_uid)],
        "files": entries,
    }


def encode(document: dict) -> tuple[bytes, str]:
    """The manifest's bytes (UTF-8 JSON; keys in the order built, which is fixed) and their SHA-256."""
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return data, hashlib.sha256(data).hexdigest()
