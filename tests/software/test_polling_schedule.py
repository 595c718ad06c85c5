"""The beat dispatcher (software.polling.dispatch_due_polls, every minute): it polls each active, due source once, and
leaves alone the sources not due, turned off, or of a suspended institution. Also in a real Celery worker: the
dispatcher's poll fetches from dcmtk's dcmqrscp and the worker then runs the job it started."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from medarchive.celery import app
from software.models import PolledStudy, PollRun, PollSource, ProcessingJob
from software.polling import tasks
from subscribers.models import Institution
from tests.software.conftest import read_stored
from tests.software.dcmtk_peers import needs_dcmtk, start_pacs, stop
from tests.software.test_polling import dated, dicom_source, node
from tests.software.volumes import as_bytes, volume, voxels_of
from tests.worker import wait_until


@pytest.fixture
def pacs(tmp_path):
    process, running = start_pacs(tmp_path)
    yield running
    stop(process)


@pytest.fixture
def eager_tasks():
    """Tasks sent with delay() run at once in this process (the dispatcher's polls)."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_the_beat_schedule_starts_the_dispatcher_every_minute(settings):
    app.loader.import_default_modules()  # what the worker and beat do at start: autodiscover every app's tasks
    entry = settings.CELERY_BEAT_SCHEDULE["software-poll-sources"]
    assert entry["task"] == tasks.dispatch_due_polls.name and entry["task"] in app.tasks
    assert entry["schedule"] == 60.0
    assert tasks.poll_source.name in app.tasks and tasks.deliver_job.name in app.tasks


@needs_dcmtk
@pytest.mark.django_db
def test_dispatcher_polls_a_due_source_once(inst_a, inst_b, license_a, pacs, eager_tasks, django_capture_on_commit_callbacks):
    pacs.add(as_bytes(dated(volume("CT", slices=3, patient_id="PAT-S1"), 1)))
    due = dicom_source(inst_a, pacs, name="due")
    later = dicom_source(inst_a, pacs, name="later")
    off = dicom_source(inst_a, pacs, name="off")
    PollSource.objects.filter(pk=later.pk).update(next_poll_at=timezone.now() + timedelta(minutes=5))
    PollSource.objects.filter(pk=off.pk).update(is_active=False)
    suspended = dicom_source(inst_a, node("ELSEWHERE", 104), name="suspended")
    Institution.objects.filter(pk=inst_b.pk).update(status="suspended")
    PollSource.objects.filter(pk=suspended.pk).update(institution=inst_b)

    with django_capture_on_commit_callbacks(execute=True):
        started = tasks.dispatch_due_polls.apply().get()
    with django_capture_on_commit_callbacks(execute=True):
        again = tasks.dispatch_due_polls.apply().get()

    assert (started, again) == (1, 0)
    assert list(PollRun.objects.values_list("source__name", "status", "found", "processed")) == [("due", "done", 1, 1)]
    due.refresh_from_db()
    assert timedelta(minutes=9) < due.next_poll_at - timezone.now() <= timedelta(minutes=10)  # its every_minutes


@needs_dcmtk
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_dispatched_poll_and_the_processing_it_starts(celery_worker_process, settings, inst_a, license_a, pacs):
    # The worker writes the archive folder it was started with: read the products from there.
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(celery_worker_process.storage_root / "archive")},
        },
    }
    study = dated(volume("CT", slices=4, patient_id="PAT-W1"), 1)
    pacs.add(as_bytes(study))
    source = dicom_source(inst_a, pacs)

    tasks.dispatch_due_polls.delay()

    def processed():
        polled = PolledStudy.objects.filter(source=source, job__isnull=False).select_related("job").first()
        return polled if polled and polled.job.is_finished else None

    polled = wait_until(processed, timeout=120, failure=lambda: f"no processed study within 120 s:\n{celery_worker_process.log_tail()}")
    run = PollRun.objects.get(source=source)
    assert (run.status, run.found, run.fetched, run.processed) == ("done", 1, 1, 1)
    job = ProcessingJob.objects.get(pk=polled.job_id)
    assert job.status == "succeeded", job.error
    product = read_stored(job.products.get().instance)
    assert np.array_equal(product.pixel_array, voxels_of(study).max(axis=0))
