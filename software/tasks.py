"""Celery tasks of the software app: thin, idempotent, each calling a service."""

from celery import shared_task


@shared_task(bind=True, ignore_result=True, max_retries=3, default_retry_delay=20)
def run_processing_job(self, job_id: int) -> None:
    """Run one processing job on this worker (the image-processing server); retried on transient failures only."""
    from .services import runner

    try:
        runner.run_job(job_id, in_worker=not self.request.is_eager)
    except runner.TransientFailure as failure:
        if self.request.retries >= self.max_retries:
            runner.fail_job(job_id, f"The job failed after {self.max_retries + 1} attempts: {failure}")
            return
        raise self.retry(exc=failure) from failure


# Polling sources and push delivery (software/polling/tasks.py), here for the worker's autodiscovery.
from .polling.tasks import deliver_job, dispatch_due_polls, poll_source  # noqa: E402, F401
