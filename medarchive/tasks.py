"""Service-level Celery tasks."""

import socket

from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .models import WorkerHeartbeat


@shared_task(name="medarchive.tasks.record_heartbeat", ignore_result=True)
def record_heartbeat(worker: str | None = None) -> None:
    """Record that a worker is alive; idempotent apart from the beat counter."""
    name = worker or f"{socket.gethostname()}"
    broker = "redis" if settings.CELERY_BROKER_URL.startswith("redis") else "filesystem"
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(worker=name).update(last_seen=now, broker=broker, beats=F("beats") + 1)
    if not updated:
        WorkerHeartbeat.objects.get_or_create(worker=name, defaults={"last_seen": now, "broker": broker, "beats": 1})
