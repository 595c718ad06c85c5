"""The archive's object storage (Django storage alias "archive"): durable writes, reads, names from validated UIDs."""

from __future__ import annotations

import os
import uuid
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages


def archive_storage():
    return storages["archive"]


def instance_name(*, institution_id: int, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
    """Storage name built only from validated UIDs, the institution id and our own hash of the bytes.

    The hash suffix means a replacement ("keep newest") never overwrites a file the index still points at.
    """
    return f"{institution_id}/{study_uid}/{series_uid}/{sop_uid}.{sha256[:16]}.dcm"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(name: str, source: BinaryIO | bytes, storage=None) -> None:
    """Write source under name so that it is complete and on stable storage before returning.

    Local folder: a temporary name in the same directory, flush, fsync, rename, fsync the
    directory — a crash leaves either the whole file or nothing under `name`. Object stores
    (S3) make a PUT visible only once complete.
    """
    storage = storage or archive_storage()
    if isinstance(storage, FileSystemStorage):
        final = storage.path(name)
        directory = os.path.dirname(final)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".incoming-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as out:
                if isinstance(source, bytes | bytearray | memoryview):
                    out.write(source)
                else:
                    source.seek(0)
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
        return
    if isinstance(source, bytes | bytearray | memoryview):
        from django.core.files.base import ContentFile

        content = ContentFile(bytes(source))
    else:
        source.seek(0)
        content = File(source)
    saved = storage.save(name, content)
    if saved != name:  # the backend renamed it: refuse to index a name we did not choose
        storage.delete(saved)
        raise OSError(f"storage saved {name!r} as {saved!r}; set file_overwrite")


def delete_quietly(name: str, storage=None) -> None:
    storage = storage or archive_storage()
    try:
        storage.delete(name)
    except FileNotFoundError:
        pass


def open_instance(name: str, storage=None):
    return (storage or archive_storage()).open(name, "rb")
