"""Backup runs (backup/engine): objects per mode, content-addressed blobs and hashed manifests, incremental copies,
contracts that may not run, one run at a time, unwritable targets, interrupted runs, S3 targets."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import pytest
from django.core.files.storage import storages
from django.utils import timezone

from backup.engine import run as runs
from backup.engine import schedule
from backup.engine.errors import BadRequest, RunAlreadyActive, RunNotAllowed
from backup.engine.objects import refresh_objects
from backup.models import BackupBlob, BackupObject, BackupRun, BackupSet, BackupSetFile, Contract
from images.models import ArchivePolicy, Study
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.backup.runs_support import (
    accepted_contract,
    archive_state,
    backup_now,
    blob_files,
    blob_path,
    delete_from_archive,
    execute,
    ingest,
    ingest_demo,
    restore_now,
    sha256_of,
    target_root,
    verify_now,
)
from tests.dicom_files import synth_bytes
from tests.storage_backends import S3_CREDENTIALS, archive_names, s3_endpoint, s3_storage_settings  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(inst_a):
    return ingest_demo(inst_a)


# --- Objects of backup per mode --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kind", "labels"),
    [
        ("all_at_time", "all", 1),
        ("per_institution", "acquiring_institution", ["Alpha Hospital", "North Site", "South Site", "TOSHIBA"]),
        ("per_patient", "patient", 3),
        ("per_examination", "study", 4),
    ],
)
def test_each_mode_backs_up_its_own_objects_as_verified_sets(inst_a, demo, mode, kind, labels):
    contract = accepted_contract(inst_a, mode)

    run = backup_now(contract)

    assert run.status == BackupRun.Status.DONE, run.message
    objects = list(BackupObject.objects.filter(contract=contract))
    assert {o.kind for o in objects} == {kind}
    if isinstance(labels, list):
        assert sorted(o.label for o in objects) == labels
    else:
        assert len(objects) == labels
    sets = BackupSet.objects.filter(contract=contract)
    assert sets.count() == len(objects)
    assert set(sets.values_list("status", flat=True)) == {BackupSet.Status.VERIFIED}
    # every instance is in exactly one set, and every object's state says what its set holds
    assert BackupSetFile.objects.filter(backup_set__contract=contract).count() == len(demo)
    for backup_object in objects:
        backup_set = sets.get(backup_object=backup_object)
        assert (backup_object.files, backup_object.bytes) == (backup_set.files, backup_set.bytes)
        assert backup_object.last_verified_at is not None and not backup_object.dirty
    assert run.files_done == run.files_total == len(demo)
    assert run.bytes_total == sum(i.size_bytes for i in demo)


def test_the_empty_acquiring_institution_is_the_institutions_own_name(inst_a, demo):
    contract = accepted_contract(inst_a, "per_institution")
    backup_now(contract)
    own = BackupObject.objects.get(contract=contract, key="Alpha Hospital")
    names = set(BackupSetFile.objects.filter(backup_set__backup_object=own).values_list("sop_instance_uid", flat=True))
    assert names == {i.sop_instance_uid for i in demo if i.series.acquiring_institution_name == ""}


def test_coverage_of_chosen_patients_backs_up_only_them(inst_a, demo):
    patient = demo[0].study.patient
    contract = accepted_contract(inst_a, "all_at_time", coverage="patients", coverage_items=[patient.pk])
    backup_now(contract)
    backed_up = set(BackupSetFile.objects.filter(backup_set__contract=contract).values_list("sop_instance_uid", flat=True))
    assert backed_up == {i.sop_instance_uid for i in demo if i.study.patient_id == patient.pk}


# --- The target's layout ---------------------------------------------------------------------------------------------


def test_blobs_are_named_by_their_sha256_and_hold_the_archived_bytes(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    archive = storages["archive"]
    for instance in demo:
        stored = blob_path(instance.sha256).read_bytes()
        with archive.open(instance.storage_name, "rb") as fh:
            assert stored == fh.read()
        assert sha256_of(stored) == instance.sha256
    assert len(blob_files()) == len(demo)


def test_manifest_names_every_file_with_hash_uids_and_index_rows_and_is_itself_hashed(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    backup_set = BackupSet.objects.get(contract=contract)
    data = (target_root() / backup_set.manifest_name).read_bytes()
    assert backup_set.manifest_name == f"manifests/contract-{contract.pk}/set-{backup_set.pk}.json"
    assert sha256_of(data) == backup_set.manifest_sha256

    document = json.loads(data)
    assert document["format_version"] == 1
    assert document["set_id"] == backup_set.pk
    assert document["contract"]["id"] == contract.pk
    assert document["institution"]["slug"] == "alpha"
    assert document["mode"] == "all_at_time"
    assert document["object"]["kind"] == "all"
    assert document["created_at"]
    files = {f["sop_instance_uid"]: f for f in document["files"]}
    assert set(files) == {i.sop_instance_uid for i in demo}
    for instance in demo:
        entry = files[instance.sop_instance_uid]
        assert entry["sha256"] == instance.sha256
        assert entry["size"] == instance.size_bytes
        assert entry["name"] == f"blobs/{instance.sha256[:2]}/{instance.sha256[2:4]}/{instance.sha256}"
        assert entry["transfer_syntax_uid"] == instance.transfer_syntax_uid
        assert entry["study_instance_uid"] == instance.study.study_instance_uid
        assert entry["instance"]["dataset_sha256"] == instance.dataset_sha256
        assert entry["instance"]["instance_number"] == instance.instance_number
    assert {p["patient_id"] for p in document["patients"]} == {"P-1", "P-2", "4MR1"}
    assert {s["study_instance_uid"] for s in document["studies"]} == {i.study.study_instance_uid for i in demo}
    north = next(s for s in document["series"] if s["acquiring_institution_name"] == "North Site")
    assert north["modality"] == "CT"
    assert north["conditions"] == demo[0].series.conditions and north["conditions"]


# --- Incremental by content hash --------------------------------------------------------------------------------------


def test_a_second_run_copies_nothing_new(inst_a, demo):
    contract = accepted_contract(inst_a)
    first = backup_now(contract)
    files_before = {p: p.stat().st_mtime_ns for p in blob_files()}

    second = backup_now(contract)

    assert second.status == BackupRun.Status.DONE
    assert first.result["written_files"] == len(demo)
    assert second.result["written_files"] == 0
    assert second.result["reused_files"] == len(demo)
    newest = BackupSet.objects.filter(contract=contract).order_by("-pk").first()
    assert (newest.status, newest.files, newest.new_files, newest.new_bytes) == (BackupSet.Status.VERIFIED, len(demo), 0, 0)
    assert {p: p.stat().st_mtime_ns for p in blob_files()} == files_before  # not one blob rewritten
    assert BackupBlob.objects.count() == len(demo)


def test_after_one_instance_changes_only_it_is_copied(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    ArchivePolicy.objects.create(institution=inst_a, on_conflict="keep_newest")
    old = demo[0]
    changed = ingest(
        inst_a,
        synth_bytes(
            "CT",
            rows=32,
            cols=32,
            patient_id="P-1",
            patient_name="One^Patient",
            study_uid=old.study.study_instance_uid,
            series_uid=old.series.series_instance_uid,
            sop_uid=old.sop_instance_uid,
            instance_number=1,
            institution_name="North Site",
            seed=7,
        ),
    )
    assert changed.sha256 != old.sha256

    second = backup_now(contract)

    assert (second.result["written_files"], second.result["reused_files"]) == (1, len(demo) - 1)
    newest = BackupSet.objects.filter(contract=contract).order_by("-pk").first()
    assert (newest.new_files, newest.new_bytes) == (1, changed.size_bytes)
    assert blob_path(changed.sha256).read_bytes() == storages["archive"].open(changed.storage_name).read()
    assert blob_path(old.sha256).exists()  # the first set still holds the old version


def test_objects_become_dirty_when_their_data_changes_and_clean_after_a_verified_set(inst_a, demo):
    contract = accepted_contract(inst_a, "per_patient")
    backup_now(contract)
    assert not BackupObject.objects.filter(contract=contract, dirty=True).exists()

    ingest(inst_a, synth_bytes("CT", rows=16, cols=16, patient_id="P-2", patient_name="Two^Patient"))
    dirty = {o.label for o, _ in refresh_objects(contract) if o.dirty}
    assert dirty == {"Two^Patient [P-2]"}


# --- Contracts that may not run ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["proposed", "countered", "rejected", "terminated"])
def test_a_contract_that_is_not_accepted_never_runs(inst_a, demo, status):
    contract = accepted_contract(inst_a, status=status)
    with pytest.raises(RunNotAllowed, match="not accepted|terminated"):
        runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    assert not BackupRun.objects.exists()

    # A run that reached the task anyway (the contract was terminated after it was queued) is refused there too.
    run = BackupRun.objects.create(contract=contract, kind=BackupRun.Kind.BACKUP)
    run = execute(run)
    assert run.status == BackupRun.Status.FAILED
    assert ("terminated" if status == "terminated" else "not accepted") in run.message
    assert not BackupSet.objects.exists() and blob_files() == []


def test_a_contract_past_its_period_does_not_back_up(inst_a, demo):
    contract = accepted_contract(inst_a, period_end=timezone.localdate() - timedelta(days=1))
    with pytest.raises(RunNotAllowed, match="ended on"):
        runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)


# --- One run at a time ---------------------------------------------------------------------------------------------------


def test_a_second_run_of_the_same_contract_is_refused_while_one_is_queued(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    first = runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)

    with pytest.raises(RunAlreadyActive) as refused:
        runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    assert f"a run of this contract is already queued: backup {first.pk}" in refused.value.message
    with pytest.raises(RunAlreadyActive):
        runs.request_verify(contract=contract, principal=OPERATOR, enqueue=False)
    with pytest.raises(RunAlreadyActive):
        runs.request_restore(contract=contract, principal=OPERATOR, scope="all", destination="zip", enqueue=False)
    assert BackupRun.objects.filter(contract=contract, status=BackupRun.Status.QUEUED).count() == 1

    # another contract is not held up
    other = accepted_contract(inst_a, "per_patient")
    assert runs.request_backup(contract=other, principal=OPERATOR, enqueue=False).status == BackupRun.Status.QUEUED


def test_a_run_whose_heartbeat_is_stale_is_marked_failed_by_the_next_request(inst_a, demo, settings):
    contract = accepted_contract(inst_a)
    stuck = runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    BackupRun.objects.filter(pk=stuck.pk).update(
        status=BackupRun.Status.RUNNING,
        started_at=timezone.now() - timedelta(minutes=30),
        heartbeat_at=timezone.now() - timedelta(minutes=11),
    )

    fresh = backup_now(contract)

    stuck.refresh_from_db()
    assert stuck.status == BackupRun.Status.FAILED
    assert "stopped reporting progress" in stuck.message
    assert fresh.status == BackupRun.Status.DONE
    assert AuditEvent.objects.filter(action="backup.backup.stale", object_id=str(stuck.pk)).exists()


def test_a_running_run_with_a_fresh_heartbeat_is_not_taken_over(inst_a, demo):
    contract = accepted_contract(inst_a)
    running = runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    BackupRun.objects.filter(pk=running.pk).update(status=BackupRun.Status.RUNNING, heartbeat_at=timezone.now())
    with pytest.raises(RunAlreadyActive, match="already running"):
        runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    assert runs.execute(running.pk) is None  # a duplicate delivery of its task does nothing


def test_an_object_of_another_contract_is_refused(inst_a, demo):
    contract = accepted_contract(inst_a)
    other = accepted_contract(inst_a, "per_patient")
    backup_now(other)
    foreign = BackupObject.objects.filter(contract=other).first()
    with pytest.raises(BadRequest, match="no object of backup"):
        runs.request_backup(contract=contract, principal=OPERATOR, object_ids=[foreign.pk], enqueue=False)


# --- Faults -----------------------------------------------------------------------------------------------------------


def _point_backup_at(settings, location):
    settings.STORAGES = {
        **settings.STORAGES,
        "backup": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}},
    }


def test_an_unwritable_target_fails_the_run_with_a_clear_message_and_earlier_sets_stay_intact(inst_a, demo, settings, tmp_path):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    good_set = BackupSet.objects.get(contract=contract)
    kept = {p: p.read_bytes() for p in (tmp_path / "backup").rglob("*") if p.is_file()}
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    _point_backup_at(settings, blocker / "backup")
    ingest(inst_a, synth_bytes("CT", rows=16, cols=16, patient_id="P-3"))

    failed = backup_now(contract)

    assert failed.status == BackupRun.Status.FAILED
    assert failed.message.startswith("backup target 'backup' is not writable: Not a directory")
    assert BackupSet.objects.filter(contract=contract).count() == 1
    _point_backup_at(settings, tmp_path / "backup")
    assert {p: p.read_bytes() for p in (tmp_path / "backup").rglob("*") if p.is_file()} == kept
    again = verify_now(contract)
    assert again.status == BackupRun.Status.DONE, again.message
    good_set.refresh_from_db()
    assert good_set.status == BackupSet.Status.VERIFIED


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as a full backup target needs root")
def test_a_full_target_fails_the_run_with_a_clear_message_and_leaves_no_set_claiming_completeness(inst_a, settings, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        _point_backup_at(settings, small)
        for n in range(4):  # about 130 kB of images for a 64 kB target
            ingest(inst_a, synth_bytes("CT", rows=128, cols=128, patient_id=f"FULL-{n}", seed=n))
        contract = accepted_contract(inst_a)

        run = backup_now(contract)

        assert run.status == BackupRun.Status.FAILED
        assert run.message.startswith("backup target 'backup' is not writable: No space left on device")
        assert not BackupSet.objects.filter(status__in=[BackupSet.Status.VERIFIED, BackupSet.Status.WRITTEN]).exists()
        assert set(BackupSet.objects.values_list("status", flat=True)) == {BackupSet.Status.WRITING}
    finally:
        subprocess.run(["umount", str(small)], check=False)


class WorkerKilled(BaseException):
    """Stands for the worker process dying: not an error the engine catches."""


def test_a_run_stopped_midway_leaves_a_writing_set_that_the_next_run_completes_reusing_blobs(inst_a, settings):
    for n in range(12):
        ingest(
            inst_a,
            synth_bytes("CT", rows=32, cols=32, patient_id="P-K", study_uid="1.2.3.4.5", series_uid="1.2.3.4.5.1", instance_number=n + 1),
        )
    contract = accepted_contract(inst_a)

    def die_after_five(snapshot):
        if snapshot.phase.startswith("Copying") and snapshot.files_done >= 5:
            raise WorkerKilled()

    settings.BACKUP_COPY_THREADS = 1
    killed = runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    with pytest.raises(WorkerKilled):
        runs.execute(killed.pk, listener=die_after_five)

    backup_set = BackupSet.objects.get(contract=contract)
    assert backup_set.status == BackupSet.Status.WRITING  # never claims to be complete
    assert backup_set.manifest_name == ""
    written_before = len(blob_files())
    assert 5 <= written_before < 12
    killed.refresh_from_db()
    assert killed.status == BackupRun.Status.RUNNING  # its worker is gone: the heartbeat goes stale

    settings.BACKUP_RUN_STALE_MINUTES = 0
    resumed = backup_now(contract)

    assert resumed.status == BackupRun.Status.DONE, resumed.message
    killed.refresh_from_db()
    assert killed.status == BackupRun.Status.FAILED
    backup_set.refresh_from_db()
    assert backup_set.status == BackupSet.Status.VERIFIED
    assert BackupSet.objects.filter(contract=contract).count() == 1  # the same set, completed
    assert backup_set.files == 12 and backup_set.new_files == 12
    assert resumed.result["written_files"] == 12 - written_before
    assert resumed.result["reused_files"] + resumed.result["adopted_files"] == written_before
    assert len(blob_files()) == 12


def test_an_archive_file_that_no_longer_matches_its_hash_is_not_backed_up_and_is_named(inst_a, demo):
    damaged = demo[2]
    path = storages["archive"].path(damaged.storage_name)
    with open(path, "r+b") as fh:
        fh.seek(-10, os.SEEK_END)
        fh.write(b"XXXXXXXXXX")
    contract = accepted_contract(inst_a)

    run = backup_now(contract)

    assert run.status == BackupRun.Status.FAILED
    assert f"instance {damaged.sop_instance_uid} no longer has the SHA-256 recorded" in run.message
    assert not blob_path(damaged.sha256).exists()
    assert not BackupSet.objects.filter(status=BackupSet.Status.VERIFIED).exists()


# --- Backup copies of studies ------------------------------------------------------------------------------------------


def test_studies_count_the_targets_holding_all_their_instances_in_a_verified_set(inst_a, demo, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "backup-offsite": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "offsite")}},
    }
    backup_now(accepted_contract(inst_a, "per_examination"))
    assert set(Study.objects.filter(institution=inst_a).values_list("backup_copies", flat=True)) == {1}
    backup_now(accepted_contract(inst_a, "all_at_time", target="backup-offsite"))
    assert set(Study.objects.filter(institution=inst_a).values_list("backup_copies", flat=True)) == {2}

    # a new instance in one study: no target holds all of that study's instances until the next runs
    study = demo[0].study
    ingest(inst_a, synth_bytes("CT", rows=16, cols=16, patient_id="P-1", patient_name="One^Patient", study_uid=study.study_instance_uid))
    schedule.dispatch()
    study.refresh_from_db()
    assert study.backup_copies == 0


# --- S3 target -----------------------------------------------------------------------------------------------------------


def test_backup_to_an_s3_target_verifies_and_restores(inst_a, demo, settings, s3_endpoint):  # noqa: F811
    import uuid

    import boto3

    bucket = f"backup-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_CREDENTIALS["access_key"],
        aws_secret_access_key=S3_CREDENTIALS["secret_key"],
        region_name=S3_CREDENTIALS["region_name"],
    )
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {**settings.STORAGES, "backup": s3_storage_settings(s3_endpoint, bucket)}
    contract = accepted_contract(inst_a, "per_patient")
    before = archive_state(inst_a)

    run = backup_now(contract)

    assert run.status == BackupRun.Status.DONE, run.message
    names = archive_names("backup")
    for instance in demo:
        key = f"blobs/{instance.sha256[:2]}/{instance.sha256[2:4]}/{instance.sha256}"
        assert key in names
        assert sha256_of(client.get_object(Bucket=bucket, Key=key)["Body"].read()) == instance.sha256
    assert len([n for n in names if n.startswith("manifests/")]) == 3
    assert not [n for n in names if ".write-test" in n]
    assert backup_now(contract).result["written_files"] == 0

    # a changed object in the bucket is found by verification
    victim = demo[1]
    key = f"blobs/{victim.sha256[:2]}/{victim.sha256[2:4]}/{victim.sha256}"
    client.put_object(Bucket=bucket, Key=key, Body=b"not the image any more")
    checked = verify_now(contract)
    assert checked.status == BackupRun.Status.FAILED and key in checked.message

    # the next backup writes it again; then everything restores from the bucket, bit-identical
    assert backup_now(contract).result["written_files"] == 1
    delete_from_archive(inst_a)
    restored = restore_now(contract, scope="all")
    assert restored.status == BackupRun.Status.DONE, restored.message
    assert archive_state(inst_a) == before
    assert Contract.objects.filter(pk=contract.pk).exists()
