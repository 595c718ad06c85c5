"""Celery tasks of storage conditions: the periodic run (Celery beat) fans out one task per institution."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from subscribers.models import Institution

from . import enforcement


@shared_task(name="images.storage_conditions.enforce_all", ignore_result=True)
def enforce_storage_conditions() -> int:
    """Scheduled by CELERY_BEAT_SCHEDULE: queue a run for every active institution; returns how many."""
    ids = list(Institution.objects.filter(status=Institution.Status.ACTIVE).order_by("pk").values_list("pk", flat=True))
    for pk in ids:
        enforce_institution_storage_conditions.delay(pk)
    return len(ids)


@shared_task(
    name="images.storage_conditions.enforce_institution",
    ignore_result=True,
    autoretry_for=(OperationalError,),  # a database briefly unavailable or locked
    retry_backoff=60,
    max_retries=3,
)
def enforce_institution_storage_conditions(institution_id: int, trigger: str = "schedule") -> None:
    """One institution's run; a second copy of it while the first runs does nothing (see enforcement._start)."""
    institution = Institution.objects.filter(pk=institution_id).first()
    if institution is None:
        return
    enforcement.enforce(institution=institution, trigger=trigger, actor=enforcement.SCHEDULED_ACTOR)
