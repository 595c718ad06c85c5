"""Restore: bring back one study, one patient, one acquiring institution or everything of a contract from its latest
verified sets (or one chosen set), into the archive or as a zip of DICOM files.

Into the archive, each file's bytes go back through the ingest service, so files and index rows come back exactly
as ingest makes them (the same bytes give the same SHA-256). An instance that still exists with the same hash is
left alone (its archive file is re-read; if it is missing or changed, it is written again from the backup); one
that exists with other content is kept (the archive holds a newer version) and counted. Every blob is re-hashed
before use: a blob that no longer matches its hash is not restored, is named, and damages its sets.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections import Counter
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from images.errors import IngestRefused
from images.ingest import IngestCache, check_may_register, ingest_instance, record_batch
from images.models import Instance
from images.storage import archive_storage, durable_write
from subscribers.access import Principal
from subscribers.models import Role

from ..models import BackupBlob, BackupRun, BackupSet, BackupSetFile, Contract
from . import copies, target
from .errors import BackupError, NothingToRestore
from .progress import Progress, human_size
from .verify import SHOWN_PROBLEMS, check_manifest, mark_damaged

IN_MEMORY_BYTES = 64 * 1024 * 1024
CHUNK = 1 << 20
SOURCE = "restore"


# --- What to restore -----------------------------------------------------------------------------------------------


def source_sets(contract: Contract, parameters: dict) -> list[BackupSet]:
    """The chosen set, or the newest verified set of each object of the contract."""
    if parameters.get("set"):
        return list(contract.sets.filter(pk=parameters["set"], status=BackupSet.Status.VERIFIED))
    newest: dict[int, tuple[datetime, int]] = {}
    for pk, object_id, created_at in contract.sets.filter(status=BackupSet.Status.VERIFIED).values_list(
        "pk", "backup_object_id", "created_at"
    ):
        if object_id not in newest or (created_at, pk) > newest[object_id]:
            newest[object_id] = (created_at, pk)
    return list(BackupSet.objects.filter(pk__in=[pk for _, pk in newest.values()]))


def scope_filter(scope: str, value: str) -> Q:
    if scope == "study":
        return Q(study_instance_uid=value)
    if scope == "patient":
        return Q(patient_key=value) if "|" in value else Q(patient_key__startswith=f"{value}|")
    if scope == "acquiring_institution":
        return Q(acquiring_institution=value)
    return Q()


def describe_scope(parameters: dict) -> str:
    scope, value = parameters.get("scope"), parameters.get("value", "")
    if scope == "all":
        return "everything"
    return f"{scope.replace('_', ' ')} {value}"


def nothing_to_restore(contract: Contract, parameters: dict) -> NothingToRestore:
    where = f"set {parameters['set']}" if parameters.get("set") else f"any verified backup set of contract {contract.pk}"
    return NothingToRestore(f"{where} holds nothing of {describe_scope(parameters)}")


def check_something_to_restore(contract: Contract, parameters: dict) -> None:
    """NothingToRestore unless a verified set holds something in the scope (one cheap query, for the request)."""
    sets = source_sets(contract, parameters)
    if (
        not BackupSetFile.objects.filter(backup_set__in=sets)
        .filter(scope_filter(parameters["scope"], parameters.get("value", "")))
        .exists()
    ):
        raise nothing_to_restore(contract, parameters)


def select_entries(contract: Contract, parameters: dict) -> list[BackupSetFile]:
    """One entry per SOP Instance (from the newest set holding it) within the scope; NothingToRestore if none."""
    sets = source_sets(contract, parameters)
    entries = (
        BackupSetFile.objects.filter(backup_set__in=sets)
        .filter(scope_filter(parameters["scope"], parameters.get("value", "")))
        .select_related("blob", "backup_set")
        .order_by("-backup_set__created_at", "-backup_set_id", "study_instance_uid", "series_instance_uid", "sop_instance_uid")
    )
    chosen: dict[str, BackupSetFile] = {}
    for entry in entries:
        chosen.setdefault(entry.sop_instance_uid, entry)
    if not chosen:
        raise nothing_to_restore(contract, parameters)
    return sorted(chosen.values(), key=lambda e: (e.study_instance_uid, e.series_instance_uid, e.sop_instance_uid))


# --- Reading a blob, checked -----------------------------------------------------------------------------------------


class BlobDamaged(Exception):
    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def read_blob(storage, alias: str, blob: BackupBlob) -> tempfile.SpooledTemporaryFile:
    """The blob's bytes in a spooled file, only if they still have the blob's SHA-256 (BlobDamaged otherwise)."""
    spool = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 (returned to the caller)
    digest = hashlib.sha256()
    try:
        handle = target.open_blob(storage, blob.storage_name)
    except FileNotFoundError:
        spool.close()
        raise BlobDamaged("missing") from None
    except target.STORAGE_ERRORS as exc:
        spool.close()
        if target.is_missing(exc):
            raise BlobDamaged("missing") from None
        raise BackupError(f"backup target '{alias}' could not be read: {target.reason(exc)}") from None
    try:
        with handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                spool.write(chunk)
    except target.STORAGE_ERRORS as exc:
        spool.close()
        if target.is_missing(exc):
            raise BlobDamaged("missing") from None
        raise BackupError(f"backup target '{alias}' could not be read: {target.reason(exc)}") from None
    if digest.hexdigest() != blob.sha256 or spool.tell() != blob.size:
        spool.close()
        raise BlobDamaged("changed")
    spool.seek(0)
    return spool


def _file_matches(storage, name: str, sha256: str, size: int) -> bool:
    digest = hashlib.sha256()
    length = 0
    try:
        with storage.open(name, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                length += len(chunk)
    except (FileNotFoundError, *target.STORAGE_ERRORS):
        return False
    return length == size and digest.hexdigest() == sha256


# --- The run ---------------------------------------------------------------------------------------------------------


def restore(run: BackupRun, progress: Progress) -> tuple[str, dict]:
    contract = run.contract
    parameters = run.parameters
    entries = select_entries(contract, parameters)
    sets = {e.backup_set_id: e.backup_set for e in entries}
    for backup_set in sets.values():
        problem = check_manifest(target.storage_of(backup_set.target), backup_set.target, backup_set)
        if problem:
            mark_damaged({backup_set.pk: [problem]}, run=run)
            raise BackupError(
                f"the manifest of set {backup_set.pk} is {problem['problem']} ({problem['file']}); nothing was restored. "
                "Restore from another set, or run a backup and restore from the new set."
            )
    size = sum(e.blob.size for e in entries)
    destination = parameters.get("destination", "archive")
    what = describe_scope(parameters)
    if destination == "zip":
        progress.start_phase(f"Exporting {what} as a zip: {len(entries):,} files", files=len(entries), size=size)
        counts, bad, extra = _to_zip(run, entries, progress)
    else:
        progress.start_phase(f"Restoring {what} into the archive: {len(entries):,} files", files=len(entries), size=size)
        counts, bad, extra = _to_archive(run, entries, progress)
    if bad:
        mark_damaged(_problems_by_set(entries, bad), run=run)
    result = {
        "files": len(entries),
        "bytes": size,
        "sets": sorted(sets),
        "scope": parameters["scope"],
        "value": parameters.get("value", ""),
    }
    result.update(counts)
    result.update(extra)
    if bad:
        names = ", ".join(sorted(target.blob_name(e.blob.sha256) for e in bad)[:SHOWN_PROBLEMS])
        error = BackupError(
            f"{len(bad)} files could not be restored because they changed or vanished in the backup target: {names}"
            + (f" and {len(bad) - SHOWN_PROBLEMS} more" if len(bad) > SHOWN_PROBLEMS else "")
            + "; the rest was restored"
        )
        error.result = result
        raise error
    if destination == "zip":
        message = f"Exported {what}: {len(entries):,} files ({human_size(size)}) as a zip."
    else:
        message = (
            f"Restored {what} into the archive: {counts.get('restored', 0):,} files restored, "
            f"{counts.get('repaired', 0):,} archive files rewritten, {counts.get('unchanged', 0):,} already there and unchanged"
            + (f", {counts['kept_newer']:,} kept (the archive holds another version)" if counts.get("kept_newer") else "")
            + "."
        )
    return message, result


def _problems_by_set(entries: list[BackupSetFile], bad: dict) -> dict[int, list[dict]]:
    problems: dict[int, list[dict]] = {}
    for entry, problem in bad.items():
        problems.setdefault(entry.backup_set_id, []).append(
            {
                "file": entry.blob.storage_name,
                "problem": problem,
                "sop_instance_uid": entry.sop_instance_uid,
                "study_instance_uid": entry.study_instance_uid,
            }
        )
    BackupBlob.objects.filter(pk__in=[e.blob_id for e in bad]).update(damaged_at=timezone.now(), verified_at=None)
    return problems


def restoring_principal(run: BackupRun) -> Principal:
    """Who registers the restored images: the person who asked (for the audit trail), with the register right only."""
    institution = run.contract.institution
    user = run.requested_by
    if user is not None:
        return Principal(
            kind="user", user=user, institution=institution, roles=frozenset({Role.REGISTER}), is_provider_staff=user.is_provider_staff
        )
    return Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER}), is_provider_staff=True)


def _to_archive(run: BackupRun, entries: list[BackupSetFile], progress: Progress):
    principal = restoring_principal(run)
    try:
        check_may_register(principal)
    except IngestRefused as refusal:
        raise BackupError(f"nothing was restored: {refusal.reason}") from None
    archive = archive_storage()
    institution = run.contract.institution
    existing: dict[str, Instance] = {}
    sops = [e.sop_instance_uid for e in entries]
    for start in range(0, len(sops), 500):
        for instance in Instance.objects.filter(institution=institution, sop_instance_uid__in=sops[start : start + 500]):
            existing[instance.sop_instance_uid] = instance
    counts: Counter = Counter()
    bad: dict[BackupSetFile, str] = {}
    refusals: list[str] = []
    results = []
    cache = IngestCache()
    restored_studies: set[int] = set()
    for entry in entries:
        blob = entry.blob
        storage = target.storage_of(entry.backup_set.target)
        instance = existing.get(entry.sop_instance_uid)
        try:
            if instance is not None and instance.sha256 == blob.sha256:
                if _file_matches(archive, instance.storage_name, instance.sha256, instance.size_bytes):
                    counts["unchanged"] += 1
                else:
                    with read_blob(storage, entry.backup_set.target, blob) as spool:
                        try:
                            durable_write(instance.storage_name, spool, storage=archive)
                        except target.STORAGE_ERRORS as exc:
                            raise BackupError(f"the archive could not store {instance.storage_name}: {target.reason(exc)}") from None
                    counts["repaired"] += 1
                restored_studies.add(instance.study_id)
            elif instance is not None:
                counts["kept_newer"] += 1
            else:
                with read_blob(storage, entry.backup_set.target, blob) as spool:
                    data = spool.read() if blob.size <= IN_MEMORY_BYTES else None
                    if data is None:
                        spool.seek(0)
                    try:
                        result = ingest_instance(
                            principal=principal, data=data, fileobj=None if data is not None else spool, source=SOURCE, cache=cache
                        )
                    except IngestRefused as refusal:
                        counts["refused"] += 1
                        refusals.append(f"{entry.sop_instance_uid}: {refusal.reason}")
                    else:
                        results.append(result)
                        counts["restored" if result.created else "unchanged"] += 1
                        restored_studies.add(result.instance.study_id)
        except BlobDamaged as damage:
            bad[entry] = damage.problem
        progress.advance(files=1, size=blob.size)
    record_batch(principal, results, source=SOURCE, refused=counts["refused"])
    copies.recount(restored_studies)
    extra = {"refusals": refusals[:20]} if refusals else {}
    if refusals and not bad:
        error = BackupError(f"{len(refusals)} files were refused by the archive: " + "; ".join(refusals[:SHOWN_PROBLEMS]))
        error.result = {**dict(counts), **extra}
        raise error
    return dict(counts), bad, extra


def _to_zip(run: BackupRun, entries: list[BackupSetFile], progress: Progress):
    parameters = run.parameters
    contract = run.contract
    zip_path = parameters.get("zip_path")
    directory = os.path.dirname(os.path.abspath(zip_path)) if zip_path else None
    fd, tmp = tempfile.mkstemp(suffix=".zip", prefix=".restore-", dir=directory)
    os.close(fd)
    bad: dict[BackupSetFile, str] = {}
    written = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for entry in entries:
                blob = entry.blob
                try:
                    with read_blob(target.storage_of(entry.backup_set.target), entry.backup_set.target, blob) as spool:
                        info = zipfile.ZipInfo(f"{entry.study_instance_uid}/{entry.series_instance_uid}/{entry.sop_instance_uid}.dcm")
                        info.date_time = timezone.localtime().timetuple()[:6]
                        with archive.open(info, "w", force_zip64=blob.size >= 1 << 31) as member:
                            while chunk := spool.read(CHUNK):
                                member.write(chunk)
                        written += 1
                except BlobDamaged as damage:
                    bad[entry] = damage.problem
                progress.advance(files=1, size=blob.size)
        if zip_path:
            os.replace(tmp, zip_path)
            return {"exported": written}, bad, {"zip_path": zip_path, "zip_bytes": os.path.getsize(zip_path)}
        name = target.export_name(contract.pk, run.pk)
        zip_bytes = os.path.getsize(tmp)
        target.save_file(target.storage_of(contract.target), name, tmp, alias=contract.target)
        return {"exported": written}, bad, {"export": name, "export_target": contract.target, "zip_bytes": zip_bytes}
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_export(run: BackupRun):
    """The exported zip of a finished restore run, opened for reading (None when there is none)."""
    name = (run.result or {}).get("export")
    if run.kind != BackupRun.Kind.RESTORE or run.status != BackupRun.Status.DONE or not name:
        return None
    storage = target.storage_of(run.result.get("export_target") or run.contract.target)
    try:
        return storage.open(name, "rb")
    except (FileNotFoundError, *target.STORAGE_ERRORS):
        return None
