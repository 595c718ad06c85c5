"""What Celery beat starts: due backups (every minute) and the daily verification of old verified sets.

| mode            | a backup is due                                                                    |
| --------------- | ---------------------------------------------------------------------------------- |
| all at a time   | daily at the contract's schedule_time, for the objects that changed               |
| per institution | daily at the contract's schedule_time, for the acquiring institutions that changed |
| per patient     | as soon as a patient's data changed (the object is dirty)                          |
| per examination | once a study is complete: dirty, and no instance for the contract's quiet_minutes  |

A scheduled backup that failed is tried again after BACKUP_RETRY_MINUTES. Only accepted contracts inside their
period are looked at; a contract with a run queued or running is left for the next minute.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from ..models import BackupMode, BackupObject, BackupRun, BackupSet, Contract
from . import conf, copies
from .errors import BackupError
from .objects import ObjectState, refresh_objects
from .run import check_runs_allowed, expire_stale_runs, request_backup, request_verify

logger = logging.getLogger(__name__)

SCHEDULE = "schedule"
VERIFY_EVERY = timedelta(days=1)


def running_contracts():
    today = timezone.localdate()
    return (
        Contract.objects.filter(status=Contract.Status.ACCEPTED, period_start__lte=today)
        .exclude(period_end__lt=today)
        .select_related("institution")
        .order_by("pk")
    )


def scheduled_slot(contract: Contract, now: datetime) -> datetime | None:
    """Today's scheduled time of an 'all at a time' or 'per institution' contract (None without a schedule_time)."""
    if contract.schedule_time is None:
        return None
    local = timezone.localtime(now)
    return timezone.make_aware(datetime.combine(local.date(), contract.schedule_time), timezone.get_current_timezone())


def _failed_lately(contract: Contract, now: datetime) -> bool:
    failed = contract.runs.filter(
        kind=BackupRun.Kind.BACKUP, trigger=SCHEDULE, status=BackupRun.Status.FAILED, finished_at__gte=now - conf.retry_after()
    )
    return failed.exclude(result__has_key="stale").exists()  # a worker that died is no reason to wait: its set is resumed


def due_objects(contract: Contract, pairs: list[tuple[BackupObject, ObjectState]], now: datetime) -> list[BackupObject]:
    changed = [(o, s) for o, s in pairs if o.dirty and s.files > 0]
    if not changed or _failed_lately(contract, now):
        return []
    if contract.mode in (BackupMode.ALL_AT_TIME, BackupMode.PER_INSTITUTION):
        slot = scheduled_slot(contract, now)
        if slot is None or now < slot:
            return []
        done_today = contract.runs.filter(kind=BackupRun.Kind.BACKUP, trigger=SCHEDULE, status=BackupRun.Status.DONE, created_at__gte=slot)
        return [] if done_today.exists() else [o for o, _ in changed]
    if contract.mode == BackupMode.PER_EXAMINATION:
        quiet_since = now - timedelta(minutes=contract.quiet_minutes)
        return [o for o, s in changed if s.last_received_at is None or s.last_received_at <= quiet_since]
    return [o for o, _ in changed]


def dispatch(now: datetime | None = None) -> list[BackupRun]:
    """Start the backups that are due; returns the runs started."""
    now = now or timezone.now()
    expire_stale_runs()
    started = []
    for contract in running_contracts():
        try:
            pairs = refresh_objects(contract)
            copies.recount_recently_received(contract.institution_id)
            if contract.runs.filter(status__in=BackupRun.ACTIVE).exists():
                continue
            due = due_objects(contract, pairs, now)
            if due:
                started.append(request_backup(contract=contract, principal=None, object_ids=[o.pk for o in due], trigger=SCHEDULE))
        except BackupError as error:  # refused (a run started meanwhile, the contract changed): the next minute decides
            logger.info("backup of contract %s not started: %s", contract.pk, error.message)
    return started


def start_due_verifications(now: datetime | None = None) -> list[BackupRun]:
    """A verification of every verified set, once a day per contract (tried again hourly while the contract is busy)."""
    now = now or timezone.now()
    started = []
    for contract in running_contracts():
        if not contract.sets.filter(status=BackupSet.Status.VERIFIED).exists():
            continue
        recent = contract.runs.filter(
            kind=BackupRun.Kind.VERIFY, trigger=SCHEDULE, created_at__gte=now - VERIFY_EVERY + timedelta(minutes=5)
        )
        if recent.exclude(status=BackupRun.Status.FAILED, result__has_key="stale").exists():
            continue
        try:
            check_runs_allowed(contract, BackupRun.Kind.VERIFY)
            started.append(request_verify(contract=contract, principal=None, trigger=SCHEDULE))
        except BackupError as error:
            logger.info("verification of contract %s not started: %s", contract.pk, error.message)
    return started
