"""The periodic storage-condition task, sent the way Celery beat sends it, run by a real Celery worker process."""

import io
from datetime import date

import numpy as np
import pytest
from celery.schedules import crontab
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless

from images.ingest import ingest_instance
from images.models import Instance, StorageSnapshot, Study
from images.storage_conditions.enforcement import SCHEDULED_ACTOR
from images.storage_conditions.services import place_legal_hold, save_storage_condition
from images.storage_conditions.tasks import enforce_storage_conditions
from medarchive.celery import app
from subscribers.models import AuditEvent
from tests.dicom_files import synth_bytes
from tests.worker import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def store(principal, **kwargs):
    return ingest_instance(principal=principal, data=synth_bytes("CT", rows=64, cols=64, **kwargs), source="test").instance


def test_the_beat_schedule_sends_the_enforcement_task_every_night(settings):
    app.loader.import_default_modules()  # what the worker and beat do at start: autodiscover every app's tasks
    entry = settings.CELERY_BEAT_SCHEDULE["storage-conditions"]
    assert entry["task"] == enforce_storage_conditions.name and entry["task"] in app.tasks
    assert isinstance(entry["schedule"], crontab) and entry["schedule"].hour == {2} and entry["schedule"].minute == {30}


def test_the_periodic_task_enforces_the_conditions_of_every_institution_in_a_worker(
    celery_worker_process, settings, principal_a, principal_b, inst_a, inst_b
):
    # The worker reads and writes the archive folder it was started with: store there.
    archive = celery_worker_process.storage_root / "archive"
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(archive)}},
    }
    old = store(principal_a, patient_id="OLD", study_date=date(2005, 6, 1))
    store(principal_a, patient_id="HELD", study_date=date(2005, 6, 1))
    new_bytes = synth_bytes("CT", rows=64, cols=64, patient_id="NEW")
    new = ingest_instance(principal=principal_a, data=new_bytes, source="test").instance
    store(principal_b, patient_id="B-1", study_date=date(2005, 6, 1))
    save_storage_condition(
        principal=principal_a,
        institution=inst_a,
        retention_years=10,
        retention_from="study_date",
        at_retention_end="delete",
        compression=JPEGLSLossless,
        immutable=False,
        required_backup_copies=0,
    )
    place_legal_hold(principal=principal_a, institution=inst_a, patient_id="HELD", reason="Case 1")

    enforce_storage_conditions.delay()

    done = wait_until(
        lambda: (
            list(StorageSnapshot.objects.filter(status__in=["done", "failed"]).order_by("institution__slug"))
            if StorageSnapshot.objects.exclude(status="running").count() == 2
            else None
        ),
        timeout=60,
        failure=lambda: f"the worker did not finish both runs within 60 s; its output:\n{celery_worker_process.log_tail()}",
    )
    alpha, beta = done
    assert (alpha.status, alpha.error, alpha.trigger) == ("done", "", "schedule")
    assert (alpha.studies_deleted, alpha.studies, alpha.instances, alpha.studies_held, alpha.studies_due_for_deletion) == (1, 2, 2, 1, 1)
    assert (beta.status, beta.studies_deleted, beta.instances) == ("done", 0, 1)  # beta has no conditions: kept without limit
    assert not Study.objects.filter(pk=old.study_id).exists() and Study.objects.count() == 3
    assert not (archive / old.storage_name).exists()
    compressed = Instance.objects.get(pk=new.pk)
    assert (compressed.transfer_syntax_uid, alpha.instances_compressed, beta.instances_compressed) == (JPEGLSLossless, 2, 0)
    assert not (archive / new.storage_name).exists() and (archive / compressed.storage_name).stat().st_size == compressed.size_bytes
    assert np.array_equal(dcmread(archive / compressed.storage_name).pixel_array, dcmread(io.BytesIO(new_bytes)).pixel_array)
    deleted = AuditEvent.objects.get(action="study.delete")
    assert (deleted.actor, deleted.object_id, deleted.principal_kind) == (SCHEDULED_ACTOR, old.study.study_instance_uid, "operator")
