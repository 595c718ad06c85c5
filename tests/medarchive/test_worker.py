"""Background work runs in a real Celery worker process, never inside the request that asked for it."""

import uuid

import pytest
from celery.result import EagerResult
from django.conf import settings

from medarchive.celery import app
from medarchive.models import WorkerHeartbeat
from medarchive.tasks import record_heartbeat
from tests.worker import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_heartbeat_sent_from_this_process_is_recorded_by_the_worker_process(celery_worker_process):
    name = f"pytest-{uuid.uuid4().hex[:12]}"

    record_heartbeat.delay(name)

    heartbeat = wait_until(
        lambda: WorkerHeartbeat.objects.filter(worker=name).first(),
        timeout=30,
        failure=lambda: f"the worker did not record heartbeat {name!r} within 30 s; its output:\n{celery_worker_process.log_tail()}",
    )
    assert heartbeat.broker == ("redis" if settings.REDIS_URL else "filesystem")
    assert heartbeat.beats == 1


def test_tasks_are_queued_for_the_worker_not_run_inside_the_request(celery_worker_process):
    assert getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False) is False
    assert app.conf.task_always_eager is False
    name = f"pytest-queued-{uuid.uuid4().hex[:12]}"

    result = record_heartbeat.delay(name)

    assert not isinstance(result, EagerResult)
    # Let the worker finish it here, so its row cannot land after this test's database flush.
    wait_until(
        lambda: WorkerHeartbeat.objects.filter(worker=name).exists(),
        timeout=30,
        failure=lambda: f"the worker did not record heartbeat {name!r} within 30 s; its output:\n{celery_worker_process.log_tail()}",
    )
