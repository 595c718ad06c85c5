"""Celery tasks of polling and push delivery: the dispatcher Celery beat starts every minute, one poll per due source,
and a push delivery retried with backoff.

software/tasks.py re-exports them for the worker's autodiscovery. Each poll claims its source first (services), so a
source is not polled twice at once by the schedule.
"""

from celery import shared_task
from django.db import transaction

from ..delivery import DeliveryFailed, deliver
from ..models import ProcessingJob
from . import services

DELIVERY_RETRIES = 5
DELIVERY_FIRST_RETRY_SECONDS = 60


@shared_task(name="software.polling.dispatch_due_polls", ignore_result=True)
def dispatch_due_polls() -> int:
    """Start a poll of every active source whose next_poll_at has come."""
    claimed = services.claim_due_sources()
    for source_id in claimed:
        transaction.on_commit(lambda source_id=source_id: poll_source.delay(source_id))
    return len(claimed)


@shared_task(name="software.polling.poll_source", ignore_result=True)
def poll_source(source_id: int) -> int | None:
    run = services.poll_source(source_id=source_id)
    return run.pk if run else None


@shared_task(name="software.delivery.deliver_job", bind=True, ignore_result=True, max_retries=DELIVERY_RETRIES)
def deliver_job(self, job_id: int) -> None:
    """Push a finished job's products; an unreachable or refusing receiver is tried again after 1, 2, 4, 8 and 16
    minutes (each failure is on the job and in the audit trail). Done already, or a pull job: nothing to do."""
    job = ProcessingJob.objects.filter(pk=job_id).first()
    if job is None:
        return
    try:
        deliver(job)
    except DeliveryFailed as failure:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=failure, countdown=DELIVERY_FIRST_RETRY_SECONDS * 2**self.request.retries) from failure
