"""Runs of a contract: asking for a backup, a verification or a restore, and carrying one out.

Every way in (portal, schedule, `manage.py backup`) asks through `request_*`, which refuses a contract that may not
run and a contract that already has a run queued or running (the database's one-active-run constraint decides), and
enqueues the Celery task after commit. `execute` is the task's body and what the command calls in-process: it claims
the run, checks the contract again, does the work, and records the outcome on the run row.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from subscribers import audit
from subscribers.models import AuditEvent

from ..models import BackupObject, BackupRun, BackupSet, Contract
from . import conf
from .errors import BackupError, BadRequest, RunAlreadyActive, RunNotAllowed
from .progress import Listener, Progress

logger = logging.getLogger(__name__)

SCOPES = ("study", "patient", "acquiring_institution", "all")
DESTINATIONS = ("archive", "zip")


# --- Whether a contract may run ------------------------------------------------------------------------------------


def check_runs_allowed(contract: Contract, kind: str = BackupRun.Kind.BACKUP) -> None:
    """Only an accepted contract runs; a backup also needs today inside the contract period. The sets of a terminated
    contract stay restorable (no backup or verification starts under it any more)."""
    if kind == BackupRun.Kind.RESTORE and contract.status == Contract.Status.TERMINATED:
        return
    if contract.status != Contract.Status.ACCEPTED:
        state = contract.get_status_display().lower()
        if contract.status == Contract.Status.TERMINATED:
            raise RunNotAllowed(f"contract {contract.pk} ({contract}) was terminated; no new runs start (its sets can still be restored)")
        raise RunNotAllowed(f"contract {contract.pk} ({contract}) is {state}, not accepted; only an accepted contract runs")
    if kind == BackupRun.Kind.BACKUP:
        today = timezone.localdate()
        if contract.period_start and today < contract.period_start:
            raise RunNotAllowed(f"contract {contract.pk} ({contract}) starts on {contract.period_start:%Y-%m-%d}; no backup runs before")
        if contract.period_end and today > contract.period_end:
            raise RunNotAllowed(f"contract {contract.pk} ({contract}) ended on {contract.period_end:%Y-%m-%d}; no backup runs after")


# --- Stale runs ----------------------------------------------------------------------------------------------------


def expire_stale_runs(contract: Contract | None = None) -> int:
    """Mark failed the runs whose worker is gone: running without a heartbeat for BACKUP_RUN_STALE_MINUTES, or queued
    that long without a worker taking them. Their unfinished sets stay as they are, for the next run to complete."""
    now = timezone.now()
    cutoff = now - conf.stale_after()
    running = Q(status=BackupRun.Status.RUNNING) & (Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
    queued = Q(status=BackupRun.Status.QUEUED, created_at__lt=cutoff)
    stale = BackupRun.objects.filter(running | queued).select_related("contract__institution")
    if contract is not None:
        stale = stale.filter(contract=contract)
    expired = 0
    for run in stale:
        if run.status == BackupRun.Status.QUEUED:
            why = f"no worker took it within {conf.value('BACKUP_RUN_STALE_MINUTES')} minutes (is a Celery worker running?)"
        else:
            last = timezone.localtime(run.heartbeat_at or run.started_at)
            why = f"it stopped reporting progress at {last:%Y-%m-%d %H:%M:%S} (its worker was stopped or died)"
        message = f"Marked failed: {why}. A backup set it was writing is completed by the next run."
        updated = BackupRun.objects.filter(pk=run.pk, status=run.status, heartbeat_at=run.heartbeat_at).update(
            status=BackupRun.Status.FAILED, finished_at=now, message=message, result={"stale": True}
        )
        if updated:
            expired += 1
            audit.record(
                action=f"backup.{run.kind}.stale",
                outcome=AuditEvent.Outcome.FAILURE,
                institution=run.contract.institution,
                actor="backup engine",
                obj=run,
                reason=message,
            )
    return expired


# --- Asking for a run ----------------------------------------------------------------------------------------------


def describe_active(contract: Contract) -> str:
    active = contract.runs.filter(status__in=BackupRun.ACTIVE).first()
    if active is None:
        return f"a run of contract {contract.pk} is already queued or running"
    since = timezone.localtime(active.started_at or active.created_at)
    return (
        f"a run of this contract is already {active.get_status_display().lower()}: "
        f"{active.get_kind_display().lower()} {active.pk}, since {since:%Y-%m-%d %H:%M}; wait for it to finish"
    )


def _create(*, contract: Contract, kind: str, parameters: dict, principal, trigger: str, enqueue: bool) -> BackupRun:
    check_runs_allowed(contract, kind)
    user = getattr(principal, "user", None)
    with transaction.atomic():
        expire_stale_runs(contract)
        try:
            with transaction.atomic():
                run = BackupRun.objects.create(
                    contract=contract, kind=kind, parameters=parameters, requested_by=user if user and user.pk else None, trigger=trigger
                )
        except IntegrityError:
            raise RunAlreadyActive(describe_active(contract)) from None
        audit.record(
            action=f"backup.{kind}.requested",
            principal=principal,
            institution=contract.institution,
            actor="" if principal is not None else f"backup {trigger}",
            obj=run,
            contract=contract.pk,
            trigger=trigger,
            **{key: value for key, value in parameters.items() if key != "objects"},
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(run_id: int) -> None:
    from backup.tasks import execute_run

    execute_run.delay(run_id)


def request_backup(
    *, contract: Contract, principal, object_ids=None, only_dirty: bool = False, trigger: str = "manual", enqueue: bool = True
) -> BackupRun:
    """A backup of the contract's objects (all of them, or object_ids; only the dirty ones with only_dirty)."""
    parameters: dict = {}
    if object_ids:
        ids = sorted({int(pk) for pk in object_ids})
        found = set()
        for start in range(0, len(ids), 500):
            found.update(BackupObject.objects.filter(contract=contract, pk__in=ids[start : start + 500]).values_list("pk", flat=True))
        unknown = [pk for pk in ids if pk not in found]
        if unknown:
            raise BadRequest(f"contract {contract.pk} has no object of backup {unknown[0]}")
        parameters["objects"] = ids
    if only_dirty:
        parameters["only_dirty"] = True
    return _create(
        contract=contract, kind=BackupRun.Kind.BACKUP, parameters=parameters, principal=principal, trigger=trigger, enqueue=enqueue
    )


def request_verify(*, contract: Contract, principal, set_ids=None, trigger: str = "manual", enqueue: bool = True) -> BackupRun:
    """Re-read every file of the contract's verified sets (or of set_ids) and check every hash."""
    parameters: dict = {}
    if set_ids:
        ids = sorted({int(pk) for pk in set_ids})
        found = set(contract.sets.exclude(manifest_name="").filter(pk__in=ids).values_list("pk", flat=True))
        unknown = [pk for pk in ids if pk not in found]
        if unknown:
            raise BadRequest(f"contract {contract.pk} has no written backup set {unknown[0]}")
        parameters["sets"] = ids
    elif not contract.sets.filter(status=BackupSet.Status.VERIFIED).exists():
        raise BadRequest(f"contract {contract.pk} has no verified backup set to verify yet")
    return _create(
        contract=contract, kind=BackupRun.Kind.VERIFY, parameters=parameters, principal=principal, trigger=trigger, enqueue=enqueue
    )


def request_restore(
    *,
    contract: Contract,
    principal,
    scope: str,
    value: str = "",
    set_id: int | None = None,
    destination: str = "archive",
    zip_path: str = "",
    trigger: str = "manual",
    enqueue: bool = True,
) -> BackupRun:
    """Restore one study, one patient, one acquiring institution or everything, into the archive or as a zip."""
    from .restore import check_something_to_restore

    if scope not in SCOPES:
        raise BadRequest(f"restore what? choose one of: {', '.join(SCOPES)}")
    value = (value or "").strip()
    if scope != "all" and not value:
        raise BadRequest(f"name the {scope.replace('_', ' ')} to restore")
    if destination not in DESTINATIONS:
        raise BadRequest(f"restore into the archive or as a zip, not {destination!r}")
    parameters = {"scope": scope, "value": value, "destination": destination}
    if set_id is not None:
        try:
            chosen = contract.sets.get(pk=int(set_id))
        except (BackupSet.DoesNotExist, ValueError, TypeError):
            raise BadRequest(f"contract {contract.pk} has no backup set {set_id}") from None
        if chosen.status != BackupSet.Status.VERIFIED:
            raise BadRequest(f"set {chosen.pk} is {chosen.get_status_display().lower()}; only a verified set is restored")
        parameters["set"] = chosen.pk
    if zip_path:
        parameters["zip_path"] = zip_path
    check_runs_allowed(contract, BackupRun.Kind.RESTORE)
    check_something_to_restore(contract, parameters)  # NothingToRestore now rather than in the worker
    return _create(
        contract=contract, kind=BackupRun.Kind.RESTORE, parameters=parameters, principal=principal, trigger=trigger, enqueue=enqueue
    )


# --- Carrying a run out --------------------------------------------------------------------------------------------


def _claim(run_id: int, task_id: str) -> BackupRun | None:
    """Take the run for this process: queued, or running with a stale heartbeat (its worker died)."""
    now = timezone.now()
    claimed = BackupRun.objects.filter(pk=run_id, status=BackupRun.Status.QUEUED).update(
        status=BackupRun.Status.RUNNING, started_at=now, heartbeat_at=now, task_id=task_id[:64], message="Starting"
    )
    if not claimed:
        cutoff = now - conf.stale_after()
        claimed = (
            BackupRun.objects.filter(pk=run_id, status=BackupRun.Status.RUNNING)
            .filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
            .update(heartbeat_at=now, task_id=task_id[:64], message="Taken over from a worker that stopped")
        )
    if not claimed:
        return None
    return BackupRun.objects.select_related("contract__institution", "requested_by").get(pk=run_id)


def finish(run: BackupRun, *, status: str, message: str, result: dict | None = None) -> None:
    run.status, run.message, run.finished_at = status, message[:4000], timezone.now()
    if result is not None:
        run.result = result
    BackupRun.objects.filter(pk=run.pk).update(status=run.status, message=run.message, finished_at=run.finished_at, result=run.result)


def actor_of(run: BackupRun) -> str:
    if run.requested_by_id:
        return f"{run.requested_by.username} (backup run {run.pk})"
    return f"backup {run.trigger} (run {run.pk})"


def execute(run_id: int, *, listener: Listener | None = None, task_id: str = "") -> BackupRun | None:
    """Carry out one run; returns it finished (done or failed), or None when it was not ours to run."""
    from . import restore, verify, write

    run = _claim(run_id, task_id)
    if run is None:
        logger.info("backup run %s is not queued (or is running elsewhere); nothing to do", run_id)
        return None
    contract = run.contract
    progress = Progress(run, listener)
    try:
        check_runs_allowed(contract, run.kind)
        if run.kind == BackupRun.Kind.BACKUP:
            message, result = write.backup(run, progress)
        elif run.kind == BackupRun.Kind.VERIFY:
            message, result = verify.verify_run(run, progress)
        else:
            message, result = restore.restore(run, progress)
    except BackupError as error:
        finish(run, status=BackupRun.Status.FAILED, message=error.message, result=getattr(error, "result", None))
        _audit_outcome(run, AuditEvent.Outcome.FAILURE, reason=error.message)
        return run
    except Exception as error:
        logger.exception("backup run %s failed", run.pk)
        finish(run, status=BackupRun.Status.FAILED, message=f"unexpected error: {type(error).__name__}: {error}")
        _audit_outcome(run, AuditEvent.Outcome.FAILURE, reason=str(error)[:500])
        raise
    progress.flush()
    finish(run, status=BackupRun.Status.DONE, message=message, result=result)
    _audit_outcome(run, AuditEvent.Outcome.SUCCESS, **{k: v for k, v in result.items() if isinstance(v, int | str)})
    return run


def interrupted(run_id: int, message: str) -> None:
    """The operator stopped the command: the run fails now (its unfinished set waits for the next run)."""
    run = BackupRun.objects.select_related("contract__institution", "requested_by").get(pk=run_id)
    if run.status in BackupRun.ACTIVE:
        finish(run, status=BackupRun.Status.FAILED, message=message)
        _audit_outcome(run, AuditEvent.Outcome.FAILURE, reason=message)


def _audit_outcome(run: BackupRun, outcome: str, **detail) -> None:
    audit.record(
        action=f"backup.{run.kind}",
        outcome=outcome,
        institution=run.contract.institution,
        user=run.requested_by,
        actor=actor_of(run),
        obj=run,
        contract=run.contract_id,
        **detail,
    )
