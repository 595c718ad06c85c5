"""Backups in real processes: each mode backs up, verifies and restores in a real Celery worker (filesystem broker, or
Redis with REDIS_URL); the beat schedule names the backup tasks; a backup process killed mid-run leaves a set that the
next run completes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.core.files.storage import storages

from backup.engine import run as runs
from backup.models import BackupRun, BackupSet
from backup.tasks import dispatch_due_backups, start_due_verifications
from medarchive.celery import app
from subscribers.access import principal_for_user
from tests.backup.runs_support import (
    MODES,
    accepted_contract,
    archive_state,
    backup_now,
    delete_from_archive,
    ingest,
    ingest_demo,
    sha256_of,
)
from tests.dicom_files import synth_bytes
from tests.worker import die_with_parent, stop_process_group, wait_until, worker_environment


def _folder(path) -> dict:
    return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(path)}}


@pytest.fixture
def worker_storages(settings, celery_worker_process):
    """This test's archive and backup storages are the worker's, so both processes see the same files."""
    root = celery_worker_process.storage_root
    settings.STORAGES = {**settings.STORAGES, "archive": _folder(root / "archive"), "backup": _folder(root / "backup")}
    return celery_worker_process


def wait_for(run: BackupRun, worker) -> BackupRun:
    return wait_until(
        lambda: BackupRun.objects.filter(pk=run.pk, status__in=["done", "failed"]).first(),
        timeout=90,
        failure=lambda: f"run {run.pk} did not finish in the worker within 90 s; its output:\n{worker.log_tail()}",
    )


def test_the_beat_schedule_dispatches_every_minute_and_verifies_hourly():
    app.loader.import_default_modules()
    dispatch = settings.CELERY_BEAT_SCHEDULE["backup-dispatch"]
    verify = settings.CELERY_BEAT_SCHEDULE["backup-verify-daily"]
    assert dispatch["task"] == dispatch_due_backups.name and dispatch["task"] in app.tasks and dispatch["schedule"] == 60.0
    assert verify["task"] == start_due_verifications.name and verify["task"] in app.tasks
    assert isinstance(verify["schedule"], crontab) and verify["schedule"].minute == {15}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_backs_up_verifies_and_restores_in_a_real_worker(worker_storages, inst_a, admin_a, mode):
    demo = ingest_demo(inst_a)
    contract = accepted_contract(inst_a, mode)
    principal = principal_for_user(admin_a.user, inst_a.pk)
    before = archive_state(inst_a)

    backup = wait_for(runs.request_backup(contract=contract, principal=principal), worker_storages)

    assert backup.status == BackupRun.Status.DONE, backup.message
    assert backup.task_id  # carried out by the worker's task, not in this process
    sets = BackupSet.objects.filter(contract=contract)
    assert sets.exists() and set(sets.values_list("status", flat=True)) == {BackupSet.Status.VERIFIED}
    backup_root = storages["backup"]
    for instance in demo:
        with backup_root.open(f"blobs/{instance.sha256[:2]}/{instance.sha256[2:4]}/{instance.sha256}", "rb") as fh:
            assert sha256_of(fh.read()) == instance.sha256

    delete_from_archive(inst_a)
    restore = wait_for(runs.request_restore(contract=contract, principal=principal, scope="all"), worker_storages)

    assert restore.status == BackupRun.Status.DONE, restore.message
    assert archive_state(inst_a) == before


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_backup_process_killed_mid_run_leaves_a_writing_set_that_the_next_run_completes(inst_a, settings, tmp_path, celery_broker_dir):
    for n in range(40):  # about 80 MB: long enough to be killed half-way
        ingest(
            inst_a,
            synth_bytes("CT", rows=1024, cols=1024, patient_id="KILL", study_uid="1.2.3.9", series_uid="1.2.3.9.1", instance_number=n + 1),
        )
    contract = accepted_contract(inst_a)
    env = worker_environment(celery_broker_dir)
    env.update(ARCHIVE_ROOT=str(tmp_path / "archive"), BACKUP_ROOT=str(tmp_path / "backup"))
    blobs = tmp_path / "backup" / "blobs"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "backup", "run", "--contract", str(contract.pk)],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or (blobs.exists() and sum(1 for p in blobs.rglob("*") if p.is_file() and len(p.name) == 64) >= 5)
            ),
            timeout=120,
            failure=lambda: "the backup command wrote no blobs within 120 s",
            interval=0.005,
        )
        assert process.poll() is None, f"the backup finished before it could be killed:\n{process.stdout.read().decode()}"
        process.send_signal(signal.SIGKILL)
    finally:
        stop_process_group(process, sig=signal.SIGKILL, timeout=5)
    time.sleep(0.1)

    backup_set = BackupSet.objects.get(contract=contract)
    assert backup_set.status == BackupSet.Status.WRITING  # not one that claims to be complete
    killed = BackupRun.objects.get(contract=contract)
    assert killed.status == BackupRun.Status.RUNNING
    written = {p.name for p in blobs.rglob("*") if p.is_file() and len(p.name) == 64}
    assert 5 <= len(written) < 40

    settings.BACKUP_RUN_STALE_MINUTES = 0  # its heartbeat has stopped; ten minutes are not waited for here
    resumed = backup_now(contract)

    assert resumed.status == BackupRun.Status.DONE, resumed.message
    killed.refresh_from_db()
    assert killed.status == BackupRun.Status.FAILED and "stopped reporting progress" in killed.message
    backup_set.refresh_from_db()
    assert backup_set.status == BackupSet.Status.VERIFIED and backup_set.files == 40
    assert BackupSet.objects.filter(contract=contract).count() == 1
    assert resumed.result["reused_files"] + resumed.result["adopted_files"] == len(written)
    assert resumed.result["written_files"] == 40 - len(written)
