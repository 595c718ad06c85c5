"""What the backup run, verify and restore tests share: accepted contracts made with the ORM, demo data ingested
through the real ingest service, runs carried out in-process, and the archive's state as SHA-256 digests."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.core.files.storage import storages
from django.utils import timezone

from backup.engine import run as runs
from backup.models import BackupBlob, BackupRun, Contract
from images.ingest import ingest_instance
from images.models import Instance, Patient, Series, Study
from subscribers.access import OPERATOR, Principal
from subscribers.models import Role
from tests.dicom_files import bundled_bytes, synth_bytes

MODES = ["all_at_time", "per_institution", "per_patient", "per_examination"]


def accepted_contract(institution, mode: str = "all_at_time", **terms) -> Contract:
    today = timezone.localdate()
    values = {
        "institution": institution,
        "title": f"{mode} backup of {institution.name}",
        "status": Contract.Status.ACCEPTED,
        "awaiting": "",
        "mode": mode,
        "coverage": "all",
        "schedule_time": None,
        "period_start": today - timedelta(days=1),
        "period_end": today + timedelta(days=365),
        "accounting_points": Decimal("10.00"),
        "rate": Decimal("5.0000"),
        "accepted_at": timezone.now(),
    }
    values.update(terms)
    return Contract.objects.create(**values)


def sender(institution) -> Principal:
    return Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER}), is_provider_staff=True)


def ingest(institution, data: bytes) -> Instance:
    return ingest_instance(principal=sender(institution), data=data, source="test").instance


def ingest_demo(institution) -> list[Instance]:
    """Three patients, four studies, three acquiring institutions (one series without InstitutionName), two transfer
    syntaxes: enough to cut differently in each mode."""
    instances = []
    study_1, study_2, study_3 = "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2", "1.2.826.0.1.3680043.10.1.3"
    for n in range(3):
        instances.append(
            ingest(
                institution,
                synth_bytes(
                    "CT",
                    rows=32,
                    cols=32,
                    patient_id="P-1",
                    patient_name="One^Patient",
                    study_uid=study_1,
                    series_uid=f"{study_1}.1",
                    instance_number=n + 1,
                    institution_name="North Site",
                ),
            )
        )
    for n in range(2):
        instances.append(
            ingest(
                institution,
                synth_bytes(
                    "MR",
                    rows=32,
                    cols=32,
                    patient_id="P-1",
                    patient_name="One^Patient",
                    study_uid=study_2,
                    series_uid=f"{study_2}.1",
                    instance_number=n + 1,
                    institution_name="",
                ),
            )
        )
    for n in range(2):
        instances.append(
            ingest(
                institution,
                synth_bytes(
                    "CT",
                    rows=32,
                    cols=32,
                    patient_id="P-2",
                    patient_name="Two^Patient",
                    study_uid=study_3,
                    series_uid=f"{study_3}.1",
                    instance_number=n + 1,
                    institution_name="South Site",
                ),
            )
        )
    instances.append(ingest(institution, bundled_bytes("MR_small_RLE.dcm")))  # its own patient and study, RLE Lossless
    return instances


def execute(run: BackupRun, **kwargs) -> BackupRun:
    runs.execute(run.pk, **kwargs)
    run.refresh_from_db()
    return run


def backup_now(contract: Contract, **kwargs) -> BackupRun:
    return execute(runs.request_backup(contract=contract, principal=OPERATOR, trigger="command", enqueue=False, **kwargs))


def verify_now(contract: Contract, **kwargs) -> BackupRun:
    return execute(runs.request_verify(contract=contract, principal=OPERATOR, trigger="command", enqueue=False, **kwargs))


def restore_now(contract: Contract, **kwargs) -> BackupRun:
    return execute(runs.request_restore(contract=contract, principal=OPERATOR, trigger="command", enqueue=False, **kwargs))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_state(institution) -> dict[str, tuple[str, str]]:
    """{SOP Instance UID: (Instance.sha256, SHA-256 of the bytes the archive storage holds)}."""
    archive = storages["archive"]
    state = {}
    for instance in Instance.objects.filter(institution=institution):
        with archive.open(instance.storage_name, "rb") as fh:
            state[instance.sop_instance_uid] = (instance.sha256, sha256_of(fh.read()))
    return state


def delete_from_archive(institution, instances=None) -> int:
    """Delete files and index rows (instances, then series, studies and patients left empty), as a disaster would."""
    archive = storages["archive"]
    instances = list(instances if instances is not None else Instance.objects.filter(institution=institution))
    for instance in instances:
        archive.delete(instance.storage_name)
    Instance.objects.filter(pk__in=[i.pk for i in instances]).delete()
    Series.objects.filter(institution=institution, instances__isnull=True).delete()
    Study.objects.filter(institution=institution, instances__isnull=True).delete()
    Patient.objects.filter(institution=institution, studies__isnull=True).delete()
    return len(instances)


def target_root() -> Path:
    return Path(storages["backup"].location)


def blob_path(sha256: str) -> Path:
    return target_root() / "blobs" / sha256[:2] / sha256[2:4] / sha256


def blob_files() -> list[Path]:
    return sorted(p for p in (target_root() / "blobs").rglob("*") if p.is_file()) if (target_root() / "blobs").exists() else []


def blob_count() -> int:
    return BackupBlob.objects.count()
