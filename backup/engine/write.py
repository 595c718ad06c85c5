"""A backup run: for each object, a set of content-addressed blobs and a manifest, all re-read and checked.

1. Every file the object covers is placed in the target as `blobs/ab/cd/<sha256>`: a blob already there (a
   BackupBlob row, not found damaged, whose file has the recorded size) is reused; a file found under its name
   without a row (written by a run that was killed before it recorded it) is re-read and adopted when its hash
   matches; anything else is copied from the archive under a temporary name, fsynced, re-read from the target and
   renamed into place (its folder fsynced) only if its SHA-256 is the one recorded at ingest (a mismatch is blamed
   on the archive file if it no longer has that hash, on the target otherwise).
2. The set's entries are recorded, the manifest written (fsynced) and hashed: the set is WRITTEN.
3. The verification pass re-reads the manifest and checks its hash, checks that every blob the run placed is in
   the target with its size, and re-reads any blob of the set never re-read before; only then is the set VERIFIED,
   the object's state updated and the studies' backup copies recounted.

A run that fails or is killed leaves its set WRITING (never claiming to be complete); the next run of the object
resumes that set and reuses every blob already written.
"""

from __future__ import annotations

import queue
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from images.storage import archive_storage

from ..models import BackupBlob, BackupObject, BackupRun, BackupSet, BackupSetFile, Contract
from . import conf, copies, manifest, target
from .errors import ArchiveFileChanged, BackupError
from .objects import acquiring_name, instances_of, is_dirty, patient_key, refresh_objects, state_of
from .progress import Progress, human_size

ROW_BATCH = 500
ROW_SECONDS = 2.0
CHUNK = 500
SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class FileRow:
    instance_pk: int
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sha256: str
    size: int
    storage_name: str
    patient_key: str
    acquiring_institution: str
    study_id: int
    series_id: int
    index: tuple  # the instance's manifest.INSTANCE_FIELDS, for the manifest

    @property
    def label(self) -> str:
        return f"instance {self.sop_instance_uid}"


@dataclass
class Tally:
    written_files: int = 0
    written_bytes: int = 0
    reused_files: int = 0
    adopted_files: int = 0
    placed: dict[str, int] = field(default_factory=dict)  # blobs written or adopted by this run (re-read): sha -> size
    studies: set[int] = field(default_factory=set)  # studies of the sets written
    changed_studies: set[int] = field(default_factory=set)  # ... of which files were written or adopted
    set_files: dict[int, dict[str, int]] = field(default_factory=dict)  # set id -> {sha: size} of its files


def rows_of(contract: Contract, backup_object: BackupObject) -> list[FileRow]:
    """What the object covers now, one row per instance, with everything the copy and the manifest need (one query)."""
    institution_name = contract.institution.name
    values = (
        instances_of(backup_object, contract)
        .order_by("study__study_instance_uid", "series__series_instance_uid", "sop_instance_uid")
        .values_list(
            "pk",
            "series__series_instance_uid",
            "study__study_instance_uid",
            "storage_name",
            "study__patient__patient_id",
            "study__patient__issuer_of_patient_id",
            "series__acquiring_institution_name",
            "study_id",
            "series_id",
            *manifest.INSTANCE_FIELDS,
        )
    )
    sop, sha, size = (manifest.INSTANCE_FIELDS.index(name) + 9 for name in ("sop_instance_uid", "sha256", "size_bytes"))
    return [
        FileRow(
            row[0],
            row[sop],
            row[1],
            row[2],
            row[sha],
            row[size],
            row[3],
            patient_key(row[4], row[5]),
            acquiring_name(row[6], institution_name),
            row[7],
            row[8],
            row[9:],
        )
        for row in values
    ]


def _selected(run: BackupRun, contract: Contract) -> list[BackupObject]:
    pairs = refresh_objects(contract)
    wanted = set(run.parameters.get("objects") or [])
    if wanted:
        current = {o.pk: (o, state) for o, state in pairs}
        others = sorted(wanted - set(current))  # objects of an earlier mode, asked for by id: rare, one query each
        pairs = [current[pk] for pk in sorted(wanted) if pk in current]
        for start in range(0, len(others), CHUNK):
            pairs += [
                (o, state_of(o, contract)) for o in BackupObject.objects.filter(contract=contract, pk__in=others[start : start + CHUNK])
            ]
    if run.parameters.get("only_dirty"):
        pairs = [(o, s) for o, s in pairs if o.dirty]
    return [o for o, state in pairs if state.files > 0]


def backup(run: BackupRun, progress: Progress) -> tuple[str, dict]:
    contract = run.contract
    alias = contract.target
    target.check_writable(alias)
    objects = _selected(run, contract)
    snapshot_at = timezone.now()  # before listing: what arrives later makes the object dirty again
    plans = [(o, rows_of(contract, o)) for o in objects]
    plans = [(o, rows) for o, rows in plans if rows]
    files = sum(len(rows) for _, rows in plans)
    size = sum(r.size for _, rows in plans for r in rows)
    tally = Tally()
    if not plans:
        return "Nothing to back up: the contract covers no images yet.", {"sets": [], "files": 0, "bytes": 0}
    progress.start_phase(f"Copying {files:,} files of {len(plans):,} objects of backup", files=files, size=size)
    written_sets: list[tuple[BackupSet, BackupObject]] = []
    with ThreadPoolExecutor(conf.copy_threads(), thread_name_prefix="backup-copy") as pool:
        for backup_object, rows in plans:
            backup_set = write_set(
                contract=contract,
                backup_object=backup_object,
                rows=rows,
                snapshot_at=snapshot_at,
                pool=pool,
                progress=progress,
                tally=tally,
            )
            written_sets.append((backup_set, backup_object))
        verified = verify_written(
            contract=contract, written=written_sets, snapshot_at=snapshot_at, pool=pool, progress=progress, tally=tally
        )
    result = {
        "sets": [s.pk for s, _ in written_sets],
        "objects": len(written_sets),
        "files": files,
        "bytes": size,
        "written_files": tally.written_files,
        "written_bytes": tally.written_bytes,
        "reused_files": tally.reused_files,
        "adopted_files": tally.adopted_files,
        "reread_files": verified,
    }
    message = (
        f"Backed up {files:,} files ({human_size(size)}) of {len(written_sets):,} objects into {len(written_sets):,} verified sets "
        f"on '{alias}': {tally.written_files:,} copied, {tally.reused_files + tally.adopted_files:,} already in the target."
    )
    return message, result


# --- Writing one set -----------------------------------------------------------------------------------------------


def _open_set(contract: Contract, backup_object: BackupObject, alias: str) -> tuple[BackupSet, bool]:
    """The object's unfinished set on this target (left by a failed or killed run), or a new one; and whether resumed."""
    with transaction.atomic():
        unfinished = list(
            BackupSet.objects.select_for_update()
            .filter(backup_object=backup_object, target=alias, status__in=[BackupSet.Status.WRITING, BackupSet.Status.WRITTEN])
            .order_by("-created_at", "-id")
        )
        if unfinished:
            current, older = unfinished[0], unfinished[1:]
            if older:
                BackupSet.objects.filter(pk__in=[s.pk for s in older]).update(
                    status=BackupSet.Status.FAILED, problems=[{"problem": f"superseded by set {current.pk}"}]
                )
            if current.status != BackupSet.Status.WRITING:
                BackupSet.objects.filter(pk=current.pk).update(status=BackupSet.Status.WRITING)
                current.status = BackupSet.Status.WRITING
            return current, True
        return BackupSet.objects.create(
            contract=contract, backup_object=backup_object, target=alias, status=BackupSet.Status.WRITING
        ), False


@dataclass(frozen=True)
class KnownBlob:
    pk: int
    size: int
    damaged: bool


def _known_blobs(alias: str, shas: list[str]) -> dict[str, KnownBlob]:
    known = {}
    for start in range(0, len(shas), CHUNK):
        rows = BackupBlob.objects.filter(target=alias, sha256__in=shas[start : start + CHUNK]).values_list(
            "sha256", "pk", "size", "damaged_at"
        )
        for sha, pk, size, damaged_at in rows:
            known[sha] = KnownBlob(pk, size, damaged_at is not None)
    return known


def _place(storage, alias: str, row: FileRow, blob: KnownBlob | None, archive) -> tuple[str, int]:
    """Make sure the blob of row is in the target; returns (what was done, size). Runs in a copy thread (no ORM)."""
    name = target.blob_name(row.sha256)
    if blob is not None and not blob.damaged:
        if target.stored_size(storage, name, alias=alias) == blob.size:
            return "reused", blob.size
    elif (
        blob is None
        and target.stored_size(storage, name, alias=alias) == row.size
        and target.hash_stored(storage, name, alias=alias) == (row.sha256, row.size)
    ):
        return "adopted", row.size
    try:
        with _open_archive(archive, row) as source:
            size = target.copy_blob(source, storage, name, expected_sha256=row.sha256, alias=alias, label=row.label)
    except target.CopyMismatch:
        with _open_archive(archive, row) as source:
            if target.hash_source(source) != row.sha256:
                raise target.archive_changed(row.label) from None
        raise BackupError(
            f"backup target '{alias}' returned other bytes than were written to {name}; nothing was kept under that name"
        ) from None
    return "written", size


def _open_archive(archive, row: FileRow):
    try:
        return archive.open(row.storage_name, "rb")
    except FileNotFoundError:
        raise ArchiveFileChanged(f"the archive file of {row.label} is missing ({row.storage_name}); it was not backed up") from None
    except target.STORAGE_ERRORS as exc:
        raise ArchiveFileChanged(f"the archive file of {row.label} could not be read: {target.reason(exc)}") from None


class _BlobRecorder:
    """Records placed blobs in the database in batches (a killed run loses at most one batch of rows; the next run
    adopts those files by re-reading them). Written and adopted blobs were re-read: they are recorded verified."""

    def __init__(self, alias: str):
        self.alias = alias
        self.new: dict[str, int] = {}
        self.rewritten: dict[str, int] = {}
        self.flushed = time.monotonic()

    def add(self, sha: str, size: int, outcome: str, blob: KnownBlob | None) -> None:
        if outcome == "reused":
            return
        if blob is None:
            self.new[sha] = size
        else:
            self.rewritten[sha] = size
        if len(self.new) + len(self.rewritten) >= ROW_BATCH or time.monotonic() - self.flushed >= ROW_SECONDS:
            self.flush()

    def flush(self) -> None:
        now = timezone.now()
        if self.new:
            BackupBlob.objects.bulk_create(
                [
                    BackupBlob(target=self.alias, sha256=sha, size=size, storage_name=target.blob_name(sha), verified_at=now)
                    for sha, size in self.new.items()
                ],
                ignore_conflicts=True,
                batch_size=ROW_BATCH,
            )
        rewritten = sorted(self.rewritten)  # the same SHA-256, so the same size: only the state changes
        for start in range(0, len(rewritten), CHUNK):
            BackupBlob.objects.filter(target=self.alias, sha256__in=rewritten[start : start + CHUNK]).update(
                damaged_at=None, verified_at=now
            )
        self.new, self.rewritten = {}, {}
        self.flushed = time.monotonic()


def write_set(
    *, contract: Contract, backup_object: BackupObject, rows: list[FileRow], snapshot_at: datetime, pool, progress: Progress, tally: Tally
) -> BackupSet:
    alias = contract.target
    storage = target.storage_of(alias)
    archive = archive_storage()
    backup_set, resumed = _open_set(contract, backup_object, alias)
    by_sha: dict[str, list[FileRow]] = defaultdict(list)
    for row in rows:
        by_sha[row.sha256].append(row)
    known = _known_blobs(alias, list(by_sha))
    recorder = _BlobRecorder(alias)
    # Completed copies arrive on a queue: O(1) per file (concurrent.futures.wait over thousands of pending futures is
    # quadratic), and a timeout to keep the heartbeat fresh while one large file is still being copied.
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    futures: dict[Future, str] = {}

    def account(sha: str, outcome: str, size: int) -> None:
        recorder.add(sha, size, outcome, known.get(sha))
        group = by_sha[sha]
        if outcome != "reused":
            tally.placed[sha] = size
        if outcome == "written":
            tally.written_files += 1
            tally.written_bytes += size
        elif outcome == "adopted":
            tally.adopted_files += 1
        else:
            tally.reused_files += len(group)
        progress.advance(files=len(group), size=sum(r.size for r in group))

    local = target.is_local(storage)
    try:
        for sha, group in by_sha.items():
            blob = known.get(sha)
            # A local blob already there is one stat away: no thread needed (an object store's HEAD goes to the pool).
            if (
                local
                and blob is not None
                and not blob.damaged
                and target.stored_size(storage, target.blob_name(sha), alias=alias) == blob.size
            ):
                account(sha, "reused", blob.size)
                continue
            future = pool.submit(_place, storage, alias, group[0], blob, archive)
            futures[future] = sha
            future.add_done_callback(finished.put)
        for _ in range(len(futures)):
            while True:
                try:
                    future = finished.get(timeout=conf.progress_seconds())
                    break
                except queue.Empty:
                    progress.flush()  # a large file is still being copied: keep the heartbeat fresh
            outcome, size = future.result()  # re-raises the copy's error
            account(futures[future], outcome, size)
    except BaseException:
        for future in futures:
            future.cancel()
        wait(list(futures))
        _record_finished(futures, known, recorder)
        raise
    recorder.flush()
    tally.set_files[backup_set.pk] = {r.sha256: r.size for r in rows}
    tally.studies.update(r.study_id for r in rows)
    tally.changed_studies.update(r.study_id for r in rows if r.sha256 in tally.placed)
    _record_entries(backup_set, rows, alias, resumed=resumed, known=known)
    document = manifest.build(
        contract=contract,
        backup_object=backup_object,
        backup_set=backup_set,
        snapshot_at=snapshot_at,
        files=rows,
        blob_names={sha: target.blob_name(sha) for sha in by_sha},
    )
    data, digest = manifest.encode(document)
    name = target.manifest_name(contract.pk, backup_set.pk)
    try:
        target.write_bytes(storage, name, data)
    except target.STORAGE_ERRORS as exc:
        raise target.not_writable(alias, exc) from None
    total = sum(r.size for r in rows)
    BackupSet.objects.filter(pk=backup_set.pk).update(
        status=BackupSet.Status.WRITTEN,
        manifest_name=name,
        manifest_sha256=digest,
        files=len(rows),
        bytes=total,
        written_at=timezone.now(),
    )
    backup_set.refresh_from_db()
    return backup_set


def _record_finished(futures: dict[Future, str], known: dict, recorder: _BlobRecorder) -> None:
    """After a failure, still record the blobs that were placed, so the next run reuses them without re-reading."""
    for future, sha in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            outcome, size = future.result()
            recorder.add(sha, size, outcome, known.get(sha))
    try:
        recorder.flush()
    except Exception:  # noqa: S110 (the original error is the one to report; the next run adopts these files)
        pass


def _record_entries(backup_set: BackupSet, rows: list[FileRow], alias: str, *, resumed: bool, known: dict[str, KnownBlob]) -> None:
    """The set's entries, one per instance. Written with one executemany: a set of 100,000 instances is recorded in
    seconds, where model instances through bulk_create would take a minute."""
    blob_ids = {sha: blob.pk for sha, blob in known.items()}
    shas = sorted({r.sha256 for r in rows} - set(blob_ids))
    for start in range(0, len(shas), CHUNK):
        blob_ids.update(BackupBlob.objects.filter(target=alias, sha256__in=shas[start : start + CHUNK]).values_list("sha256", "pk"))
    quote = connection.ops.quote_name
    columns = [
        "backup_set_id",
        "blob_id",
        "instance_id",
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "patient_key",
        "acquiring_institution",
    ]
    table, names, placeholders = quote(BackupSetFile._meta.db_table), ", ".join(map(quote, columns)), ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({names}) VALUES ({placeholders})"  # noqa: S608 (the model's own names; values are parameters)
    values = [
        (
            backup_set.pk,
            blob_ids[r.sha256],
            r.instance_pk,
            r.study_instance_uid,
            r.series_instance_uid,
            r.sop_instance_uid,
            r.patient_key[:200],
            r.acquiring_institution,
        )
        for r in rows
    ]
    with transaction.atomic():
        if resumed:
            BackupSetFile.objects.filter(backup_set=backup_set).delete()
        with connection.cursor() as cursor:
            for start in range(0, len(values), 5000):
                cursor.executemany(sql, values[start : start + 5000])


# --- Verifying what was written ------------------------------------------------------------------------------------


def verify_written(
    *,
    contract: Contract,
    written: list[tuple[BackupSet, BackupObject]],
    snapshot_at: datetime,
    pool: ThreadPoolExecutor,
    progress: Progress,
    tally: Tally,
) -> int:
    """The verification pass: re-read every manifest and every blob of these sets not re-read before (hashes); check
    that every blob this run placed is in the target with its size; mark the sets verified. Returns the number of
    files re-read in all (during the copy and here). Raises BackupError naming the files when anything is wrong (the
    sets become FAILED)."""
    from .verify import check_blobs, check_manifest, check_sizes

    alias = contract.target
    storage = target.storage_of(alias)
    set_ids = [s.pk for s, _ in written]
    in_sets = BackupSetFile.objects.filter(backup_set_id__in=set_ids).values("blob_id")
    unverified = list(BackupBlob.objects.filter(target=alias, verified_at__isnull=True, pk__in=in_sets))
    placed_shas = sorted(tally.placed)
    placed = []
    for start in range(0, len(placed_shas), CHUNK):
        placed += BackupBlob.objects.filter(target=alias, sha256__in=placed_shas[start : start + CHUNK], verified_at__isnull=False)
    progress.start_phase(
        f"Verifying: {len(written):,} manifests re-read, {len(placed):,} files written checked in the target"
        + (f", {len(unverified):,} files re-read" if unverified else ""),
        files=len(unverified) + len(placed),
        size=sum(b.size for b in unverified) + sum(b.size for b in placed),
    )
    bad = check_blobs(storage, alias, unverified, pool=pool, progress=progress)
    bad.update(check_sizes(storage, alias, placed, pool=pool, progress=progress))
    now = timezone.now()
    good_ids = [b.pk for b in unverified if b.pk not in bad]
    for start in range(0, len(good_ids), CHUNK):
        BackupBlob.objects.filter(pk__in=good_ids[start : start + CHUNK]).update(verified_at=now)
    if bad:
        BackupBlob.objects.filter(pk__in=list(bad)).update(damaged_at=now, verified_at=None)
    failures = []
    for backup_set, backup_object in written:
        problems = _problems_of_set(backup_set, bad)
        manifest_problem = check_manifest(storage, alias, backup_set)
        if manifest_problem:
            problems.insert(0, manifest_problem)
        # New in this set: what this run placed, and what an earlier, interrupted attempt at the same set wrote.
        files = tally.set_files[backup_set.pk]
        new = {sha for sha in files if sha in tally.placed}
        new.update(
            BackupSetFile.objects.filter(backup_set=backup_set, blob__created_at__gte=backup_set.created_at).values_list(
                "blob__sha256", flat=True
            )
        )
        counts = {"new_files": len(new), "new_bytes": sum(files[sha] for sha in new)}
        if problems:
            BackupSet.objects.filter(pk=backup_set.pk).update(status=BackupSet.Status.FAILED, problems=problems, **counts)
            failures.extend(problems)
            continue
        BackupSet.objects.filter(pk=backup_set.pk).update(status=BackupSet.Status.VERIFIED, verified_at=now, problems=[], **counts)
        _object_verified(contract, backup_object, backup_set, snapshot_at, now)
    copies.recount_after_backup(tally.studies, tally.changed_studies)
    if failures:
        names = ", ".join(p.get("file", "") for p in failures[:SHOWN_PROBLEMS])
        more = f" and {len(failures) - SHOWN_PROBLEMS} more" if len(failures) > SHOWN_PROBLEMS else ""
        raise BackupError(
            f"verification after writing found {len(failures)} files changed or missing in backup target '{alias}': {names}{more}; "
            "the sets are marked failed and the next run writes those files again"
        )
    return len(unverified) + len(tally.placed)


def _problems_of_set(backup_set: BackupSet, bad: dict[int, str]) -> list[dict]:
    if not bad:
        return []
    rows = BackupSetFile.objects.filter(backup_set=backup_set, blob_id__in=list(bad)).values_list(
        "blob_id", "blob__storage_name", "sop_instance_uid", "study_instance_uid"
    )
    return [
        {"file": name, "problem": bad[blob_id], "sop_instance_uid": sop, "study_instance_uid": study} for blob_id, name, sop, study in rows
    ]


def _object_verified(contract: Contract, backup_object: BackupObject, backup_set: BackupSet, snapshot_at: datetime, now: datetime) -> None:
    backup_object.last_backup_at = snapshot_at
    backup_object.last_verified_at = now
    backup_object.files = backup_set.files
    backup_object.bytes = backup_set.bytes
    backup_object.dirty = is_dirty(backup_object, state_of(backup_object, contract))
    backup_object.save(update_fields=["last_backup_at", "last_verified_at", "files", "bytes", "dirty"])
