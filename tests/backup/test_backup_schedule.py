"""The dispatcher Celery beat runs every minute (backup/engine/schedule.py): which backups are due in each mode."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.utils import timezone

from backup.engine import schedule
from backup.models import BackupObject, BackupRun
from tests.backup.runs_support import accepted_contract, execute, ingest, ingest_demo
from tests.dicom_files import synth_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(inst_a):
    return ingest_demo(inst_a)


def started_objects(runs) -> list[set[str]]:
    return [set(BackupObject.objects.filter(pk__in=r.parameters["objects"]).values_list("label", flat=True)) for r in runs]


def test_per_patient_backs_up_each_patient_whose_data_changed(inst_a, demo, django_capture_on_commit_callbacks):
    contract = accepted_contract(inst_a, "per_patient")

    with django_capture_on_commit_callbacks() as enqueued:
        first = schedule.dispatch()

    assert [(r.kind, r.trigger, r.status) for r in first] == [("backup", "schedule", "queued")]
    assert len(first[0].parameters["objects"]) == 3
    assert len(enqueued) == 1
    assert execute(first[0]).status == BackupRun.Status.DONE
    assert schedule.dispatch() == []  # nothing changed since

    ingest(inst_a, synth_bytes("CT", rows=16, cols=16, patient_id="P-2", patient_name="Two^Patient"))
    second = schedule.dispatch()

    assert started_objects(second) == [{"Two^Patient [P-2]"}]
    assert contract.runs.count() == 2


def test_per_examination_waits_until_the_study_is_quiet(inst_a, demo):
    contract = accepted_contract(inst_a, "per_examination", quiet_minutes=30)

    assert schedule.dispatch() == []  # instances arrived just now

    later = schedule.dispatch(now=timezone.now() + timedelta(minutes=31))
    assert len(later) == 1 and len(later[0].parameters["objects"]) == 4
    assert later[0].contract == contract


def test_all_at_a_time_runs_once_a_day_at_its_scheduled_time(inst_a, demo):
    waiting = accepted_contract(inst_a, "all_at_time", schedule_time=time(23, 59, 59))
    assert schedule.dispatch() == []
    waiting.delete()
    contract = accepted_contract(inst_a, "all_at_time", schedule_time=time(0, 0))

    today = schedule.dispatch()
    assert len(today) == 1
    execute(today[0])
    ingest(inst_a, synth_bytes("CT", rows=16, cols=16, patient_id="P-9"))

    assert schedule.dispatch() == []  # done today, even though data changed since
    tomorrow = schedule.dispatch(now=timezone.now() + timedelta(days=1))
    assert [r.contract_id for r in tomorrow] == [contract.pk]


def test_per_institution_without_a_schedule_time_is_not_started_by_the_schedule(inst_a, demo):
    accepted_contract(inst_a, "per_institution", schedule_time=None)
    assert schedule.dispatch() == []


def test_contracts_that_may_not_run_are_never_dispatched(inst_a, demo):
    for status in ("proposed", "countered", "rejected", "terminated"):
        accepted_contract(inst_a, "per_patient", status=status)
    accepted_contract(inst_a, "per_patient", period_start=timezone.localdate() + timedelta(days=3))
    assert schedule.dispatch() == []
    assert not BackupRun.objects.exists()


def test_a_failed_scheduled_backup_is_tried_again_after_the_retry_time(inst_a, demo, settings, tmp_path):
    contract = accepted_contract(inst_a, "per_patient")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    good = settings.STORAGES["backup"]
    settings.STORAGES = {**settings.STORAGES, "backup": {**good, "OPTIONS": {"location": str(blocker / "backup")}}}
    failed = execute(schedule.dispatch()[0])
    assert failed.status == BackupRun.Status.FAILED and "not writable" in failed.message

    assert schedule.dispatch() == []  # not every minute against a broken target
    settings.BACKUP_RETRY_MINUTES = 0
    settings.STORAGES = {**settings.STORAGES, "backup": good}
    retried = schedule.dispatch()
    assert len(retried) == 1 and execute(retried[0]).status == BackupRun.Status.DONE
    assert contract.runs.count() == 2


def test_a_contract_with_a_run_in_progress_waits_and_a_dead_run_is_cleared(inst_a, demo):
    contract = accepted_contract(inst_a, "per_patient")
    busy = schedule.dispatch()[0]
    BackupRun.objects.filter(pk=busy.pk).update(status=BackupRun.Status.RUNNING, heartbeat_at=timezone.now())
    assert schedule.dispatch() == []

    BackupRun.objects.filter(pk=busy.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=11))
    started = schedule.dispatch()

    busy.refresh_from_db()
    assert busy.status == BackupRun.Status.FAILED
    assert [r.contract_id for r in started] == [contract.pk]
