"""Objects of backup: what a contract covers, cut into the units its mode backs up, and whether each changed.

| mode            | object kind            | key                              | one object per          |
| --------------- | ---------------------- | -------------------------------- | ----------------------- |
| all at a time   | all                    | ""                               | contract                |
| per institution | acquiring_institution  | the acquiring institution's name | Series.acquiring_institution_name (empty: the institution's own name) |
| per patient     | patient                | the Patient's pk                 | patient                 |
| per examination | study                  | the Study's pk                   | study                   |

Keys of patients and studies are database ids (a label for provider staff that names no patient). When index rows
were deleted and restored under new ids, the object left without its row is taken over by the restored row of the
same patient (PatientID and issuer) or study (StudyInstanceUID), so its sets stay its own. An object is dirty when
the data it covers differs from its latest verified set: other count or size of instances, or an instance received
after that set's snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Q, QuerySet, Sum

from images.models import Instance, Patient, Study

from ..models import BackupMode, BackupObject, BackupSetFile, Contract, Coverage

KIND_OF_MODE = {
    BackupMode.ALL_AT_TIME: BackupObject.Kind.ALL,
    BackupMode.PER_INSTITUTION: BackupObject.Kind.ACQUIRING_INSTITUTION,
    BackupMode.PER_PATIENT: BackupObject.Kind.PATIENT,
    BackupMode.PER_EXAMINATION: BackupObject.Kind.STUDY,
}


@dataclass(frozen=True)
class ObjectState:
    """What an object covers right now."""

    files: int
    bytes: int
    last_received_at: datetime | None


def patient_key(patient_id: str, issuer: str) -> str:
    return f"{patient_id}|{issuer}"


def acquiring_name(series_name: str, institution_name: str) -> str:
    return (series_name or institution_name)[:64]


def _ids_and_names(items) -> tuple[list[int], list[str]]:
    ids, names = [], []
    for item in items or []:
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            ids.append(int(item))
        elif isinstance(item, str) and item:
            names.append(item)
    return ids, names


def covered_instances(contract: Contract) -> QuerySet[Instance]:
    """Every instance the contract covers (its institution's own, narrowed by the coverage)."""
    instances = Instance.objects.filter(institution_id=contract.institution_id)
    items = contract.coverage_items or []
    if contract.coverage == Coverage.ACQUIRING_INSTITUTIONS:
        names = {str(name) for name in items if name}
        match = Q(series__acquiring_institution_name__in=names)
        if contract.institution.name[:64] in names:
            match |= Q(series__acquiring_institution_name="")
        return instances.filter(match)
    if contract.coverage == Coverage.PATIENTS:
        ids, patient_ids = _ids_and_names(items)  # patient pks (or PatientIDs)
        return instances.filter(Q(study__patient_id__in=ids) | Q(study__patient__patient_id__in=patient_ids))
    if contract.coverage == Coverage.STUDIES:
        ids, uids = _ids_and_names(items)  # study pks (or StudyInstanceUIDs)
        return instances.filter(Q(study_id__in=ids) | Q(study__study_instance_uid__in=uids))
    return instances


def instances_of(backup_object: BackupObject, contract: Contract | None = None) -> QuerySet[Instance]:
    """The instances one object covers now."""
    contract = contract or backup_object.contract
    instances = covered_instances(contract)
    kind, key = backup_object.kind, backup_object.key
    if kind == BackupObject.Kind.ACQUIRING_INSTITUTION:
        match = Q(series__acquiring_institution_name=key)
        if key == contract.institution.name[:64]:
            match |= Q(series__acquiring_institution_name="")
        return instances.filter(match)
    if kind == BackupObject.Kind.PATIENT:
        return instances.filter(study__patient_id=int(key)) if key.isdigit() else instances.none()
    if kind == BackupObject.Kind.STUDY:
        return instances.filter(study_id=int(key)) if key.isdigit() else instances.none()
    return instances


def state_of(backup_object: BackupObject, contract: Contract | None = None) -> ObjectState:
    totals = instances_of(backup_object, contract).aggregate(
        files=Count("pk"), bytes=Sum("size_bytes"), last=Max("study__last_received_at")
    )
    return ObjectState(totals["files"], totals["bytes"] or 0, totals["last"])


def is_dirty(backup_object: BackupObject, state: ObjectState) -> bool:
    if state.files == 0:
        return False  # nothing covered (any more): nothing to back up; earlier sets stay as they are
    if backup_object.last_verified_at is None or backup_object.last_backup_at is None:
        return True
    if (state.files, state.bytes) != (backup_object.files, backup_object.bytes):
        return True
    return state.last_received_at is not None and state.last_received_at > backup_object.last_backup_at


def _current(contract: Contract) -> dict[str, tuple[dict, ObjectState]]:
    """{key: (object fields, state)} for the contract's mode, from one grouped query."""
    instances = covered_instances(contract)
    totals = {"files": Count("pk"), "bytes": Sum("size_bytes"), "last": Max("study__last_received_at")}
    institution_name = contract.institution.name
    found: dict[str, tuple[dict, ObjectState]] = {}

    def add(key: str, fields: dict, row: dict) -> None:
        previous = found.get(key)
        state = ObjectState(row["files"], row["bytes"] or 0, row["last"])
        if previous is not None:  # "" and the institution's own name are one object
            old = previous[1]
            last = max(filter(None, [old.last_received_at, state.last_received_at]), default=None)
            state = ObjectState(old.files + state.files, old.bytes + state.bytes, last)
        found[key] = (fields, state)

    if contract.mode == BackupMode.ALL_AT_TIME:
        row = instances.aggregate(**totals)
        if row["files"]:
            add("", {"label": f"Everything covered by {contract}"[:300]}, row)
    elif contract.mode == BackupMode.PER_INSTITUTION:
        for row in instances.values("series__acquiring_institution_name").annotate(**totals).order_by():
            name = acquiring_name(row["series__acquiring_institution_name"], institution_name)
            add(name, {"label": name}, row)
    elif contract.mode == BackupMode.PER_PATIENT:
        fields = ("study__patient_id", "study__patient__patient_id", "study__patient__issuer_of_patient_id")
        for row in instances.values(*fields).annotate(**totals).order_by():
            identity = patient_key(row["study__patient__patient_id"], row["study__patient__issuer_of_patient_id"])
            add(str(row["study__patient_id"]), {"patient_id": row["study__patient_id"], "identity": identity}, row)
    elif contract.mode == BackupMode.PER_EXAMINATION:
        for row in instances.values("study_id", "study__study_instance_uid").annotate(**totals).order_by():
            add(str(row["study_id"]), {"study_id": row["study_id"], "identity": row["study__study_instance_uid"]}, row)
    return found


def _labels(kind: str, rows: dict[str, tuple[dict, ObjectState]]) -> None:
    """Fill in labels people recognise: the patient's name and ID, the study's date and description."""
    if kind == BackupObject.Kind.PATIENT:
        patients = Patient.objects.in_bulk([fields["patient_id"] for fields, _ in rows.values()])
        for fields, _ in rows.values():
            patient = patients.get(fields["patient_id"])
            fields["label"] = str(patient)[:300] if patient else ""
    elif kind == BackupObject.Kind.STUDY:
        studies = Study.objects.select_related("patient").in_bulk([fields["study_id"] for fields, _ in rows.values()])
        for fields, _ in rows.values():
            study = studies.get(fields["study_id"])
            if study is not None:
                fields["patient_id"] = study.patient_id
                fields["label"] = f"{study.patient} · {study}"[:300]


def _adopt_orphans(contract: Contract, kind: str, missing: dict[str, tuple[dict, ObjectState]]) -> bool:
    """Objects whose patient or study row was deleted take over the restored row of the same identity."""
    if kind not in (BackupObject.Kind.PATIENT, BackupObject.Kind.STUDY) or not missing:
        return False
    row_field = "patient" if kind == BackupObject.Kind.PATIENT else "study"
    orphans = BackupObject.objects.filter(contract=contract, kind=kind, **{f"{row_field}__isnull": True})
    if not orphans.exists():
        return False
    adopted = False
    identity_field = "patient_key" if kind == BackupObject.Kind.PATIENT else "study_instance_uid"
    identities = dict(
        BackupSetFile.objects.filter(backup_set__backup_object__in=orphans)
        .values_list(identity_field, "backup_set__backup_object_id")
        .distinct()
    )
    for key, (fields, _) in list(missing.items()):
        orphan_id = identities.pop(fields["identity"], None)
        if orphan_id is not None:
            BackupObject.objects.filter(pk=orphan_id).update(key=key, **{f"{row_field}_id": fields[f"{row_field}_id"]})
            del missing[key]
            adopted = True
    return adopted


def refresh_objects(contract: Contract) -> list[tuple[BackupObject, ObjectState]]:
    """Create the contract's objects for its current mode, update their dirty flags; return them with what each
    covers now (objects of earlier modes, or whose data is gone, keep their sets and are left alone)."""
    kind = KIND_OF_MODE[BackupMode(contract.mode)]
    current = _current(contract)
    existing = {o.key: o for o in BackupObject.objects.filter(contract=contract, kind=kind)}
    missing = {key: fields_state for key, fields_state in current.items() if key not in existing}
    adopted = _adopt_orphans(contract, kind, missing)
    _labels(kind, missing)
    if missing:
        BackupObject.objects.bulk_create(
            [
                BackupObject(contract=contract, kind=kind, key=key, dirty=True, **{k: v for k, v in fields.items() if k != "identity"})
                for key, (fields, _) in missing.items()
            ],
            ignore_conflicts=True,  # a concurrent refresh created some of them
        )
    if missing or adopted:
        existing = {o.key: o for o in BackupObject.objects.filter(contract=contract, kind=kind)}
    changed = []
    result = []
    for key, backup_object in existing.items():
        _, state = current.get(key, ({}, ObjectState(0, 0, None)))
        dirty = is_dirty(backup_object, state)
        if backup_object.dirty != dirty:
            backup_object.dirty = dirty
            changed.append(backup_object)
        result.append((backup_object, state))
    if changed:
        BackupObject.objects.bulk_update(changed, ["dirty"], batch_size=500)
    result.sort(key=lambda pair: (pair[0].label, pair[0].pk))
    return result
