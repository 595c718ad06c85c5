"""Celery tasks of hard copy: thin, idempotent, each calling a service."""

from celery import shared_task


@shared_task(ignore_result=True)
def print_to_dicom_printer(job_id: int) -> None:
    from .dicom_print import print_job

    print_job(job_id=job_id)
