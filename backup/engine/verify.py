"""Verification: re-read files in the backup target and check every hash against what was recorded when written.

A verification run re-reads each distinct blob of the sets it checks once (however many sets share it) and each
manifest. A blob that vanished or whose bytes changed damages every set that names it, on any contract: those sets
become DAMAGED with the files named in `problems`, the blob is marked damaged (so the next backup writes it again
from the archive instead of reusing it), the objects whose latest set it was become dirty, and the institution's
admins and provider staff are told.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed

from django.db.models import Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from subscribers import audit
from subscribers.models import AuditEvent, Membership, User
from subscribers.services import notify

from ..models import BackupBlob, BackupObject, BackupRun, BackupSet, BackupSetFile
from . import conf, copies, target
from .errors import BackupError
from .progress import Progress, human_size

CHUNK = 500
SHOWN_PROBLEMS = 5
MAX_PROBLEMS = 1000  # kept per set; the count says how many there were


def check_blobs(storage, alias: str, blobs: list[BackupBlob], *, pool: ThreadPoolExecutor, progress: Progress) -> dict[int, str]:
    """{blob id: "missing" or "changed"} for each blob whose file is gone or no longer has its SHA-256 and size."""
    futures = {pool.submit(target.hash_stored, storage, blob.storage_name, alias=alias): blob for blob in blobs}
    bad: dict[int, str] = {}
    for future in as_completed(futures):
        blob = futures[future]
        found = future.result()
        if found is None:
            bad[blob.pk] = "missing"
        elif found != (blob.sha256, blob.size):
            bad[blob.pk] = "changed"
        progress.advance(files=1, size=blob.size)
    return bad


def check_sizes(storage, alias: str, blobs: list[BackupBlob], *, pool: ThreadPoolExecutor, progress: Progress) -> dict[int, str]:
    """{blob id: "missing" or "changed"} for each blob whose file is gone or has another size (no re-read)."""
    futures = {pool.submit(target.stored_size, storage, blob.storage_name, alias=alias): blob for blob in blobs}
    bad: dict[int, str] = {}
    for future in as_completed(futures):
        blob = futures[future]
        size = future.result()
        if size is None:
            bad[blob.pk] = "missing"
        elif size != blob.size:
            bad[blob.pk] = "changed"
        progress.advance(files=1, size=blob.size)
    return bad


def check_manifest(storage, alias: str, backup_set: BackupSet) -> dict | None:
    data = target.read_bytes(storage, backup_set.manifest_name, alias=alias)
    if data is None:
        return {"file": backup_set.manifest_name, "problem": "missing"}
    if hashlib.sha256(data).hexdigest() != backup_set.manifest_sha256:
        return {"file": backup_set.manifest_name, "problem": "changed"}
    return None


def _sets_to_check(run: BackupRun) -> list[BackupSet]:
    sets = BackupSet.objects.filter(contract=run.contract).exclude(manifest_name="")
    wanted = run.parameters.get("sets")
    sets = sets.filter(pk__in=wanted) if wanted else sets.filter(status=BackupSet.Status.VERIFIED)
    return list(sets.select_related("backup_object").order_by("pk"))


def _blobs_of(set_ids: list[int]) -> list[BackupBlob]:
    return list(BackupBlob.objects.filter(pk__in=BackupSetFile.objects.filter(backup_set_id__in=set_ids).values("blob_id")).order_by("pk"))


def verify_run(run: BackupRun, progress: Progress) -> tuple[str, dict]:
    sets = _sets_to_check(run)
    if not sets:
        return "Nothing to verify: the contract has no verified backup set.", {"sets": 0, "files": 0, "bytes": 0}
    by_target: dict[str, list[BackupSet]] = defaultdict(list)
    for backup_set in sets:
        by_target[backup_set.target].append(backup_set)
    blobs_by_target = {alias: _blobs_of([s.pk for s in group]) for alias, group in by_target.items()}
    files = sum(len(b) for b in blobs_by_target.values())
    size = sum(blob.size for group in blobs_by_target.values() for blob in group)
    progress.start_phase(f"Verifying {len(sets):,} sets: re-reading {files:,} files", files=files, size=size)
    now = timezone.now()
    damaged_sets: dict[int, list[dict]] = {}
    with ThreadPoolExecutor(conf.copy_threads(), thread_name_prefix="backup-verify") as pool:
        for alias, group in by_target.items():
            storage = target.storage_of(alias)
            blobs = blobs_by_target[alias]
            bad = check_blobs(storage, alias, blobs, pool=pool, progress=progress)
            _record_blob_results(blobs, bad, now)
            for backup_set in group:
                problems = blob_problems(backup_set.pk, bad)
                manifest_problem = check_manifest(storage, alias, backup_set)
                if manifest_problem:
                    problems.insert(0, manifest_problem)
                if problems:
                    damaged_sets[backup_set.pk] = problems
                else:
                    BackupSet.objects.filter(pk=backup_set.pk).update(status=BackupSet.Status.VERIFIED, verified_at=now, problems=[])
            # Sets outside this run that name a bad blob are damaged too (the same file backs them).
            if bad:
                others = BackupSetFile.objects.filter(blob_id__in=list(bad), backup_set__status=BackupSet.Status.VERIFIED).exclude(
                    backup_set_id__in=[s.pk for s in group]
                )
                for other_id in set(others.values_list("backup_set_id", flat=True)):
                    damaged_sets[other_id] = blob_problems(other_id, bad)
    if damaged_sets:
        mark_damaged(damaged_sets, run=run)
    result = {"sets": len(sets), "files": files, "bytes": size, "damaged_sets": sorted(damaged_sets)}
    if damaged_sets:
        problems = [p for group in damaged_sets.values() for p in group]
        names = ", ".join(sorted({p["file"] for p in problems})[:SHOWN_PROBLEMS])
        count = len({p["file"] for p in problems})
        more = f" and {count - SHOWN_PROBLEMS} more" if count > SHOWN_PROBLEMS else ""
        error = BackupError(
            f"verification found {count} files changed or missing in the backup target: {names}{more}; "
            f"damaged sets: {', '.join(str(pk) for pk in sorted(damaged_sets))}"
        )
        error.result = result
        raise error
    return f"Verified {len(sets):,} sets: re-read {files:,} files ({human_size(size)}), every hash matches.", result


def _record_blob_results(blobs: list[BackupBlob], bad: dict[int, str], now) -> None:
    good = [b.pk for b in blobs if b.pk not in bad]
    for start in range(0, len(good), CHUNK):
        BackupBlob.objects.filter(pk__in=good[start : start + CHUNK]).update(verified_at=now, damaged_at=None)
    if bad:
        BackupBlob.objects.filter(pk__in=list(bad)).update(damaged_at=now, verified_at=None)


def blob_problems(set_id: int, bad: dict[int, str]) -> list[dict]:
    if not bad:
        return []
    rows = (
        BackupSetFile.objects.filter(backup_set_id=set_id, blob_id__in=list(bad))
        .order_by("blob__storage_name")
        .values_list("blob_id", "blob__storage_name", "sop_instance_uid", "study_instance_uid")
    )
    return [
        {"file": name, "problem": bad[blob_id], "sop_instance_uid": sop, "study_instance_uid": study} for blob_id, name, sop, study in rows
    ]


def mark_damaged(damaged: dict[int, list[dict]], *, run: BackupRun | None) -> None:
    """Sets become DAMAGED with their problems; their objects dirty; copies recounted; people told; all audited."""
    sets = list(BackupSet.objects.filter(pk__in=list(damaged)).select_related("contract__institution", "backup_object"))
    for backup_set in sets:
        problems = damaged[backup_set.pk]
        kept = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            kept.append({"file": "", "problem": f"{len(problems) - MAX_PROBLEMS} more files"})
        BackupSet.objects.filter(pk=backup_set.pk).update(status=BackupSet.Status.DAMAGED, problems=kept)
        audit.record(
            action="backup.set.damaged",
            outcome=AuditEvent.Outcome.FAILURE,
            institution=backup_set.contract.institution,
            actor=f"backup verification (run {run.pk})" if run else "backup verification",
            obj=backup_set,
            contract=backup_set.contract_id,
            files=[p["file"] for p in problems[:50]],
            problems=len(problems),
        )
    BackupObject.objects.filter(pk__in={s.backup_object_id for s in sets}).update(dirty=True)
    study_ids = BackupSetFile.objects.filter(backup_set_id__in=list(damaged), instance__isnull=False).values_list(
        "instance__study_id", flat=True
    )
    copies.recount(set(study_ids))
    by_institution: dict[int, list[BackupSet]] = defaultdict(list)
    for backup_set in sets:
        by_institution[backup_set.contract.institution_id].append(backup_set)
    for group in by_institution.values():
        _tell(group, damaged, run)


def _tell(sets: list[BackupSet], damaged: dict[int, list[dict]], run: BackupRun | None) -> None:
    institution = sets[0].contract.institution
    files = sorted({p["file"] for s in sets for p in damaged[s.pk] if p["file"]})
    shown = ", ".join(files[:SHOWN_PROBLEMS]) + (f" and {len(files) - SHOWN_PROBLEMS} more" if len(files) > SHOWN_PROBLEMS else "")
    text = (
        f"Backup verification found {len(files)} changed or missing files in {len(sets)} backup sets of {institution.name} "
        f"(sets {', '.join(str(s.pk) for s in sets)}): {shown}. The next backup writes them again from the archive."
    )
    admins = User.objects.filter(
        Q(pk__in=Membership.objects.filter(institution=institution, is_active=True, is_admin=True).values("user_id")) | Q(is_staff=True),
        is_active=True,
    )
    link = ""
    if run is not None and run.contract.institution_id == institution.pk:
        try:
            link = reverse("backup-run", args=[run.pk])
        except NoReverseMatch:
            link = ""
    notify(users=list(admins), text=text, link=link, institution=institution)
