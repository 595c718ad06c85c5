"""One enforcement run for one institution: delete what is past retention (unless held or kept), compress what the
conditions ask, then record the data-stored state as a StorageSnapshot the portal shows.

Safe to run twice and after a crash: each deletion and each compression commits on its own and is found done by the
next run; a run left "running" by a killed worker is marked failed by the next one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from subscribers.access import OPERATOR, Principal
from subscribers.models import Institution

from ..models import Instance, StorageSnapshot, Study
from . import compression
from .policy import ConditionSet, study_states
from .services import delete_study

SCHEDULED_ACTOR = "storage conditions (scheduled run)"
# A run "running" without progress for this long was left by a worker that died; the next run marks it failed and goes on.
STALE_AFTER = timedelta(hours=2)
PROGRESS_EVERY_SECONDS = 2.0
MAX_PROBLEMS = 200


@dataclass
class RunReport:
    """What a run did (or, dry, would do), line by line for the operator command."""

    institution: Institution
    dry_run: bool = False
    skipped_reason: str = ""
    snapshot: StorageSnapshot | None = None
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    studies_deleted: int = 0
    instances_deleted: int = 0
    bytes_deleted: int = 0
    instances_to_check: int = 0
    instances_checked: int = 0
    instances_compressed: int = 0
    bytes_saved: int = 0
    held_past_retention: int = 0
    flagged: int = 0
    would_delete: set[int] = field(default_factory=set)  # dry run: studies the compression pass leaves out

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        self.lines.append(f"problem: {text}")


def _start(institution: Institution, trigger: str) -> StorageSnapshot | None:
    """The snapshot row of a new run, or None when another run of this institution is under way."""
    with transaction.atomic():
        Institution.objects.select_for_update().filter(pk=institution.pk).first()  # one run per institution at a time
        running = StorageSnapshot.objects.filter(institution=institution, status=StorageSnapshot.Status.RUNNING)
        stale = running.filter(progress_at__lt=timezone.now() - STALE_AFTER)
        stale.update(status=StorageSnapshot.Status.FAILED, finished_at=timezone.now(), error="Interrupted: the run never finished.")
        if running.exists():
            return None
        return StorageSnapshot.objects.create(institution=institution, trigger=trigger)


def enforce(
    *,
    institution: Institution,
    trigger: str,
    principal: Principal = OPERATOR,
    actor: str = "",
    dry_run: bool = False,
    today: date | None = None,
) -> RunReport:
    """Apply the institution's storage conditions once. A dry run changes nothing, not even the history of runs."""
    today = today or timezone.localdate()
    report = RunReport(institution=institution, dry_run=dry_run)
    snapshot = None
    if not dry_run:
        snapshot = _start(institution, trigger)
        if snapshot is None:
            report.skipped_reason = "another run of this institution is under way"
            return report
        report.snapshot = snapshot
    try:
        conditions = ConditionSet.of(institution.pk)
        progress = _Progress(snapshot)
        _delete_past_retention(report, conditions, progress, principal=principal, actor=actor, today=today)
        _compress(report, conditions, progress, principal=principal, actor=actor)
        state = data_stored_state(institution, conditions, today=today)
    except Exception as error:
        if snapshot is not None:
            _finish(snapshot, report, status=StorageSnapshot.Status.FAILED, error=f"{type(error).__name__}: {error}")
        raise
    # Still stored though due: held, or refused (see the problems). A dry run deleted nothing, so leave those out.
    report.held_past_retention = state["studies_due_for_deletion"] - len(report.would_delete)
    report.flagged = state["studies_flagged"]
    if snapshot is not None:
        _finish(snapshot, report, status=StorageSnapshot.Status.DONE, **state)
    return report


class _Progress:
    """Writes a run's progress to its snapshot row every few seconds (and its heartbeat, which tells a live run from a
    dead one)."""

    def __init__(self, snapshot: StorageSnapshot | None):
        self.snapshot, self.last = snapshot, time.monotonic()

    def __call__(self, *, force: bool = False, **fields) -> None:
        if self.snapshot is None or not (force or time.monotonic() - self.last > PROGRESS_EVERY_SECONDS):
            return
        StorageSnapshot.objects.filter(pk=self.snapshot.pk).update(progress_at=timezone.now(), **fields)
        self.last = time.monotonic()


def _delete_past_retention(report: RunReport, conditions: ConditionSet, progress: _Progress, *, principal, actor, today: date) -> None:
    # Listed first, then deleted: the list is not read from the tables it deletes from.
    due = [s for s in study_states(report.institution.pk, conditions) if s.past_retention(today) and s.effective.deletes]
    for state in due:
        if state.held:
            report.lines.append(f"kept study {state.study_instance_uid}: past retention, but under a legal hold")
            continue
        ended = f"retention ended on {state.effective.retention_end:%Y-%m-%d}"
        if report.dry_run:
            report.lines.append(f"would delete study {state.study_instance_uid}: {ended}")
            report.studies_deleted += 1
            report.would_delete.add(state.pk)
            continue
        study = Study.objects.filter(pk=state.pk).first()
        if study is None:
            continue
        try:
            deleted = delete_study(principal=principal, study=study, reason=f"Storage conditions: {ended}.", actor=actor, today=today)
        except ValidationError as refusal:
            report.problem(" ".join(refusal.messages))
            continue
        report.studies_deleted += 1
        report.instances_deleted += deleted.instances
        report.bytes_deleted += deleted.bytes_stored
        report.lines.append(
            f"deleted study {deleted.study_instance_uid} ({deleted.instances} instances, {deleted.bytes_stored:,} bytes): {ended}"
        )
        progress(studies_deleted=report.studies_deleted, instances_deleted=report.instances_deleted, bytes_deleted=report.bytes_deleted)


def _compress(report: RunReport, conditions: ConditionSet, progress: _Progress, *, principal, actor) -> None:
    if not conditions.compresses:
        return
    todo = []
    for instance in compression.candidates(report.institution.pk).iterator(chunk_size=500):
        target = conditions.compression_for(instance.series.modality)
        if target and instance.study_id not in report.would_delete and compression.precheck(instance, target) is None:
            todo.append((instance.pk, target))
    report.instances_to_check = len(todo)
    progress(force=True, instances_to_check=len(todo))
    for done, (pk, target) in enumerate(todo, start=1):
        report.instances_checked = done
        instance = Instance.objects.filter(pk=pk).first()
        if instance is None:
            continue  # deleted meanwhile
        outcome = compression.compress_instance(instance=instance, target=target, principal=principal, actor=actor, dry_run=report.dry_run)
        if outcome.status == "compressed":
            report.instances_compressed += 1
            report.bytes_saved += outcome.bytes_saved
        elif outcome.status == "failed":
            report.problem(f"instance {instance.sop_instance_uid} not compressed: {outcome.reason}")
        progress(instances_checked=done, instances_compressed=report.instances_compressed, bytes_saved_by_run=report.bytes_saved)
    verb = "would compress" if report.dry_run else "compressed"
    if todo:
        report.lines.append(f"{verb} {report.instances_compressed} of {len(todo)} instances checked, saving {report.bytes_saved:,} bytes")


def data_stored_state(institution: Institution, conditions: ConditionSet, *, today: date) -> dict:
    """The figures of a snapshot: what is stored now, and what the conditions say about it."""
    totals = Instance.objects.filter(institution=institution).aggregate(
        instances=Count("pk"),
        bytes_stored=Coalesce(Sum("size_bytes"), 0),
        bytes_received=Coalesce(Sum(Coalesce("original_size_bytes", "size_bytes")), 0),
        instances_compressed_total=Count("pk", filter=Q(compressed_at__isnull=False)),
    )
    state = {
        **totals,
        "studies": 0,
        "studies_due_for_deletion": 0,
        "studies_flagged": 0,
        "studies_held": 0,
        "studies_lacking_backup_copies": 0,
    }
    for study in study_states(institution.pk, conditions):
        state["studies"] += 1
        state["studies_held"] += study.held
        state["studies_lacking_backup_copies"] += study.lacks_backup_copies
        if study.past_retention(today):
            key = "studies_due_for_deletion" if study.effective.deletes else "studies_flagged"
            state[key] += 1
    return state


def _finish(snapshot: StorageSnapshot, report: RunReport, *, status: str, error: str = "", **state) -> None:
    snapshot.status = status
    snapshot.finished_at = timezone.now()
    snapshot.error = error[:2000]
    snapshot.instances_to_check = report.instances_to_check
    snapshot.instances_checked = report.instances_checked
    snapshot.studies_deleted = report.studies_deleted
    snapshot.instances_deleted = report.instances_deleted
    snapshot.bytes_deleted = report.bytes_deleted
    snapshot.instances_compressed = report.instances_compressed
    snapshot.bytes_saved_by_run = report.bytes_saved
    snapshot.problems = report.problems
    for name, value in state.items():
        setattr(snapshot, name, value)
    snapshot.save()
