"""The backup target: a Django storage of its own (`storages[contract.target]`), holding content-addressed blobs,
one manifest per set and restore exports.

    blobs/ab/cd/<sha256>                         one archived file, named by the SHA-256 of its bytes
    manifests/contract-<id>/set-<id>.json        one backup set: every file with its hash and index rows
    exports/contract-<id>/restore-<run>.zip      a restore exported as a zip of DICOM files

A local folder gets each file under a temporary name, fsynced, then renamed (and its folder fsynced before the
manifest is written), so a crash leaves a whole file or none. An object store (S3) shows a PUT only once complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from typing import BinaryIO

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InvalidStorageError, storages

from .errors import ArchiveFileChanged, TargetNotWritable, TargetUnreadable

CHUNK = 1 << 20
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)


def storage_of(alias: str):
    try:
        return storages[alias]
    except InvalidStorageError:
        raise TargetNotWritable(f"backup target '{alias}' is not configured (no such storage in settings.STORAGES)") from None


def blob_name(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def manifest_name(contract_id: int, set_id: int) -> str:
    return f"manifests/contract-{contract_id}/set-{set_id}.json"


def export_name(contract_id: int, run_id: int) -> str:
    return f"exports/contract-{contract_id}/restore-{run_id}.zip"


def is_local(storage) -> bool:
    return isinstance(storage, FileSystemStorage)


def local_path(storage, name: str) -> str:
    """The file of name in a local target. Names here are our own (hex digests, ids), never a caller's, so the join
    needs none of FileSystemStorage.path's checks, which cost more than the stat they precede."""
    return os.path.join(storage.location, name)


def reason(exc: BaseException) -> str:
    """The cause of a storage error in words: 'No space left on device', 'AccessDenied: ...'."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc) or type(exc).__name__


def is_missing(exc: BaseException) -> bool:
    """Whether a storage error means "no such file" (a local FileNotFoundError, an object store's 404)."""
    if isinstance(exc, FileNotFoundError):
        return True
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def not_writable(alias: str, exc: BaseException) -> TargetNotWritable:
    return TargetNotWritable(f"backup target '{alias}' is not writable: {reason(exc)}")


def check_writable(alias: str) -> None:
    """Write and delete a small probe file, so a full or read-only target fails the run before any work."""
    storage = storage_of(alias)
    name = f"blobs/.write-test-{uuid.uuid4().hex}"
    try:
        write_bytes(storage, name, b"medarchive backup write test\n")
        storage.delete(name)
    except STORAGE_ERRORS as exc:
        raise not_writable(alias, exc) from None


# --- Writing -------------------------------------------------------------------------------------------------------


def write_bytes(storage, name: str, data: bytes) -> None:
    """A small file (a manifest) written durably under name, replacing any file of that name."""
    if is_local(storage):
        final = local_path(storage, name)
        directory = os.path.dirname(final)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        fsync_directory(directory)
        return
    _save(storage, name, ContentFile(data))


class CopyMismatch(Exception):
    """The copy re-read from the target does not have the expected SHA-256 (the caller finds out whose fault it is)."""


def copy_blob(source: BinaryIO, storage, name: str, *, expected_sha256: str, alias: str, label: str) -> int:
    """Copy source into the target under name; the copy is re-read from the target and kept only if its SHA-256 is
    expected_sha256 (CopyMismatch otherwise: the archive file changed, or the target returned other bytes).

    Local folder: a temporary name, fsync, re-read and hash, rename, fsync of the folder. Object store: one PUT,
    then a GET of the object, hashed. Returns the size. Raises ArchiveFileChanged (the source cannot be read) or TargetNotWritable.
    """
    if is_local(storage):
        final = local_path(storage, name)
        directory = os.path.dirname(final)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        except OSError as exc:
            raise not_writable(alias, exc) from None
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := _read(source, label):
                    size += len(chunk)
                    _write(out.write, chunk, alias)
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise not_writable(alias, exc) from None
            if _hash_path(tmp) != (expected_sha256, size):
                raise CopyMismatch(name)
            try:
                os.replace(tmp, final)
                fsync_directory(directory)  # the rename is durable before the blob is recorded
            except OSError as exc:
                raise not_writable(alias, exc) from None
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return size
    # An object store: spool the source, one PUT, then read the object back.
    with tempfile.SpooledTemporaryFile(max_size=64 * CHUNK) as spool:
        size = 0
        while chunk := _read(source, label):
            size += len(chunk)
            spool.write(chunk)
        spool.seek(0)
        try:
            _save(storage, name, File(spool))
        except STORAGE_ERRORS as exc:
            raise not_writable(alias, exc) from None
    if hash_stored(storage, name, alias=alias) != (expected_sha256, size):
        delete_quietly(storage, name)
        raise CopyMismatch(name)
    return size


def _hash_path(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def hash_source(source: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(source: BinaryIO, label: str) -> bytes:
    try:
        return source.read(CHUNK)
    except STORAGE_ERRORS as exc:
        raise ArchiveFileChanged(f"the archive file of {label} could not be read: {reason(exc)}") from None


def _write(write, chunk: bytes, alias: str) -> None:
    try:
        write(chunk)
    except OSError as exc:
        raise not_writable(alias, exc) from None


def archive_changed(label: str) -> ArchiveFileChanged:
    return ArchiveFileChanged(f"the archive file of {label} no longer has the SHA-256 recorded when it was received; it was not backed up")


def _save(storage, name: str, content) -> None:
    saved = storage.save(name, content)
    if saved != name:  # the backend renamed it (file_overwrite off): a manifest would name the wrong file
        storage.delete(saved)
        raise OSError(f"storage saved {name!r} as {saved!r}; set file_overwrite for the backup target")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete_quietly(storage, name: str) -> None:
    try:
        storage.delete(name)
    except (FileNotFoundError, *STORAGE_ERRORS):
        pass


# --- Reading -------------------------------------------------------------------------------------------------------


def stored_size(storage, name: str, *, alias: str) -> int | None:
    """Size of the file under name, or None when there is none."""
    if is_local(storage):
        try:
            return os.stat(local_path(storage, name)).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    try:
        return storage.size(name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    except (FileNotFoundError, BotoCoreError) as exc:
        if isinstance(exc, FileNotFoundError):
            return None
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None


def hash_stored(storage, name: str, *, alias: str) -> tuple[str, int] | None:
    """(SHA-256, size) of the file under name as the target returns it now, or None when it is missing."""
    try:
        handle = open(local_path(storage, name), "rb") if is_local(storage) else storage.open(name, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return None
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    except STORAGE_ERRORS as exc:
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    digest = hashlib.sha256()
    size = 0
    try:
        with handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    except STORAGE_ERRORS as exc:
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    return digest.hexdigest(), size


def read_bytes(storage, name: str, *, alias: str) -> bytes | None:
    try:
        with storage.open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None
    except STORAGE_ERRORS as exc:
        raise TargetUnreadable(f"backup target '{alias}' could not be read: {reason(exc)}") from None


def open_blob(storage, name: str):
    return open(local_path(storage, name), "rb") if is_local(storage) else storage.open(name, "rb")


def save_file(storage, name: str, path: str, *, alias: str) -> None:
    """A finished local file (a restore zip) into the target under name."""
    try:
        if is_local(storage):
            final = local_path(storage, name)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(path, final) if _same_filesystem(path, final) else _copy_local(path, final)
            fsync_directory(os.path.dirname(final))
            return
        with open(path, "rb") as fh:
            _save(storage, name, File(fh))
    except STORAGE_ERRORS as exc:
        raise not_writable(alias, exc) from None


def _same_filesystem(path: str, final: str) -> bool:
    return os.stat(path).st_dev == os.stat(os.path.dirname(final)).st_dev


def _copy_local(path: str, final: str) -> None:
    directory = os.path.dirname(final)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
            while chunk := source.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        _unlink_quietly(tmp)
        raise
