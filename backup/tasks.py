"""Celery tasks of the backup app: thin, idempotent, each calling the engine.

`execute_run` carries out one BackupRun (a backup, a verification or a restore) whose row the engine created; run
twice, the second finds the run no longer queued and does nothing. The beat entries in settings start
`dispatch_due_backups` every minute and `start_due_verifications` every hour (each contract is verified daily).
"""

from celery import shared_task

from .engine import run, schedule


@shared_task(name="backup.tasks.execute_run", ignore_result=True, bind=True)
def execute_run(self, run_id: int) -> None:
    run.execute(run_id, task_id=self.request.id or "")


@shared_task(name="backup.tasks.dispatch_due_backups", ignore_result=True)
def dispatch_due_backups() -> int:
    return len(schedule.dispatch())


@shared_task(name="backup.tasks.start_due_verifications", ignore_result=True)
def start_due_verifications() -> int:
    return len(schedule.start_due_verifications())
