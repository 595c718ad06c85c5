"""Many files at once (a zip, a folder tree, a browser upload): each file through the one ingest service, one audit batch.

Zips are read defensively: entry names are never used as paths (each entry goes to a temporary
file of our own naming), unsafe names are refused unread, and a zip bomb is refused on its
declared sizes and again while each entry is unpacked, because headers can lie.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings

from subscribers.access import Principal
from subscribers.models import Institution, Role

from ..errors import IngestRefused, NotAuthorized, NotDicom, StorageFailed, TooLarge
from .service import IngestCache, IngestResult, check_may_register, ingest_instance, max_instance_bytes, record_batch, record_refusal

# Zip bomb limits besides settings.UPLOAD_MAX_UNCOMPRESSED_BYTES. DICOM pixel data compresses
# well (CT about 3:1, blank regions more), but nothing real expands 200:1 beyond 10 MB.
ZIP_MAX_ENTRIES = 100_000
ZIP_MAX_RATIO = 200
ZIP_RATIO_MIN_BYTES = 10 * 1024 * 1024
CHUNK = 1024 * 1024
# Refusals are audited one by one up to this many per batch; the batch event counts them all.
MAX_REFUSAL_EVENTS = 100

STATUSES = ("stored", "already_stored", "replaced", "refused")


class UnsafeName(IngestRefused):
    code = "unsafe_name"


class ZipRefused(IngestRefused):
    code = "bad_zip"


class ZipBomb(TooLarge):
    code = "zip_bomb"


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file of a batch; `name` is as the sender called it (for display, never a path)."""

    name: str
    status: str  # one of STATUSES
    reason: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    code: str = ""
    http_status: int = 200
    size: int = 0

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "code": self.code,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
        }


Progress = Callable[[FileOutcome, int, int], None]  # (outcome, files done, files in all)


def count_outcomes(outcomes: list[FileOutcome]) -> dict[str, int]:
    counts = Counter(o.status for o in outcomes)
    return {status: counts.get(status, 0) for status in STATUSES}


def operator_for(institution: Institution) -> Principal:
    """The service operator registering images for one institution (manage.py import_dicom)."""
    return Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER}), is_provider_staff=True)


class _Batch:
    """Runs files through ingest_instance, keeps their outcomes, and writes the batch's audit trail."""

    def __init__(self, *, principal: Principal, source: str, address: str, total: int, progress: Progress | None):
        self.principal, self.source, self.address = principal, source, address
        self.total, self.progress = total, progress
        self.results: list[IngestResult] = []
        self.outcomes: list[FileOutcome] = []
        self.refused = 0
        self.cache = IngestCache()

    def ingest(self, name: str, *, size: int, path=None, fileobj: BinaryIO | None = None) -> FileOutcome:
        try:
            result = ingest_instance(
                principal=self.principal,
                path=path,
                fileobj=fileobj,
                source=self.source,
                address=self.address,
                audit_refusals=False,
                cache=self.cache,
            )
        except IngestRefused as refusal:
            return self.refuse(name, refusal, size=size)
        self.results.append(result)
        instance = result.instance
        return self._add(FileOutcome(name, result.status, "", instance.sop_instance_uid, instance.study.study_instance_uid, size=size))

    def refuse(self, name: str, refusal: IngestRefused, *, size: int = 0) -> FileOutcome:
        self.refused += 1
        if self.refused <= MAX_REFUSAL_EVENTS:
            record_refusal(self.principal, refusal, source=self.source, address=self.address, name=name)
        return self._add(FileOutcome(name, "refused", refusal.reason, code=refusal.code, http_status=refusal.http_status, size=size))

    def _add(self, outcome: FileOutcome) -> FileOutcome:
        self.outcomes.append(outcome)
        if self.progress is not None:
            self.progress(outcome, len(self.outcomes), self.total)
        return outcome

    def close(self) -> None:
        record_batch(self.principal, self.results, source=self.source, address=self.address, refused=self.refused)


def _may_register(principal: Principal, *, source: str, address: str) -> None:
    """Refuse the whole batch up front (audited once) rather than once per file."""
    try:
        check_may_register(principal)
    except NotAuthorized as refusal:
        record_refusal(principal, refusal, source=source, address=address)
        raise


def _refuse_whole(principal: Principal, refusal: IngestRefused, *, source: str, address: str, name: str = "") -> IngestRefused:
    record_refusal(principal, refusal, source=source, address=address, name=name)
    return refusal


def _not_an_image(name: str, *, in_container: bool) -> IngestRefused | None:
    """Files known by name not to be images, refused with a reason the sender understands."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base.upper() == "DICOMDIR":
        return NotDicom(
            "This is not a DICOM file but a DICOMDIR, the index of a DICOM disc; the images it lists are taken from their own files."
        )
    if in_container and base.lower().endswith(".zip"):
        return NotDicom("This is not a DICOM file but a zip; a zip inside a folder or zip is not unpacked. Send it on its own.")
    if in_container and (base.startswith("._") or "__MACOSX" in name.replace("\\", "/").split("/")):
        return NotDicom("This is not a DICOM file but macOS folder metadata.")
    return None


def _readable_size(size: int) -> str:
    if size < 1_000_000:
        return f"{size:,} bytes"
    if size < 1_000_000_000:
        return f"{size / 1_000_000:,.1f} MB"
    return f"{size / 1_000_000_000:,.1f} GB"


# --- One file ------------------------------------------------------------------------------------


def ingest_file(
    *, principal: Principal, name: str, path=None, fileobj: BinaryIO | None = None, source: str, address: str = ""
) -> FileOutcome:
    """One uploaded file: its outcome (refusals included); NotAuthorized when the caller may not send at all."""
    _may_register(principal, source=source, address=address)
    size = os.path.getsize(path) if path is not None else _size_of(fileobj)
    batch = _Batch(principal=principal, source=source, address=address, total=1, progress=None)
    try:
        refusal = _not_an_image(name, in_container=False)
        return batch.refuse(name, refusal, size=size) if refusal else batch.ingest(name, size=size, path=path, fileobj=fileobj)
    finally:
        batch.close()


def _size_of(fileobj: BinaryIO) -> int:
    fileobj.seek(0, os.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(0)
    return size


def looks_like_zip(name: str, *, path=None, fileobj: BinaryIO | None = None) -> bool:
    """A zip by its signature or its name; never a DICOM file, whatever its 128-byte preamble holds (PS3.10 7.1)."""
    if path is not None:
        with open(path, "rb") as fh:
            head = fh.read(132)
    else:
        fileobj.seek(0)
        head = fileobj.read(132)
        fileobj.seek(0)
    if head[128:132] == b"DICM":
        return False
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or name.lower().endswith(".zip")


# --- Zip files -----------------------------------------------------------------------------------


def unsafe_entry_name(name: str) -> bool:
    """Absolute, drive-lettered, '..'-climbing (with / or \\ as separator) or control-character names."""
    if not name or any(ord(ch) < 32 for ch in name):
        return True
    parts = name.replace("\\", "/").split("/")
    if name[0] in "/\\" or (len(name) > 1 and name[1] == ":"):
        return True
    return any(part == ".." for part in parts)


def _entry_refusal(info: zipfile.ZipInfo) -> IngestRefused | None:
    """Refusals decided from the central directory alone, before a byte is unpacked."""
    if unsafe_entry_name(info.filename):
        return UnsafeName("Unsafe name in the zip (an absolute path or '..'): this entry was not unpacked.")
    if info.flag_bits & 0x1:
        return ZipRefused("This entry is encrypted (password protected); the archive cannot read it.")
    if stat.S_ISLNK(info.external_attr >> 16):
        return ZipRefused("This entry is a symbolic link, not a file.")
    refusal = _not_an_image(info.filename, in_container=True)
    if refusal:
        return refusal
    if info.file_size > max_instance_bytes():
        return TooLarge(f"This object is {info.file_size:,} bytes; the archive accepts at most {max_instance_bytes():,} bytes per object.")
    if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
        return _bomb_entry(info.file_size, info.compress_size)
    return None


def _bomb_entry(size: int, compressed: int) -> ZipBomb:
    ratio = size // max(compressed, 1)
    return ZipBomb(
        f"This entry expands {ratio:,}:1 ({_readable_size(size)} from {_readable_size(compressed)}), a likely zip bomb; "
        f"the archive unpacks nothing that expands more than {ZIP_MAX_RATIO}:1."
    )


def _check_declared(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > ZIP_MAX_ENTRIES:
        raise ZipRefused(f"This zip holds {len(infos):,} entries; the archive accepts at most {ZIP_MAX_ENTRIES:,} per zip. Split it.")
    limit = settings.UPLOAD_MAX_UNCOMPRESSED_BYTES
    declared = sum(info.file_size for info in infos)
    if declared > limit:
        raise ZipBomb(
            f"This zip expands to {_readable_size(declared)}; the archive unpacks at most {_readable_size(limit)} per zip. Split it into smaller zips."
        )


class _Budget:
    """Bytes the whole zip may still expand to, counted as they are really unpacked."""

    def __init__(self, limit: int):
        self.left = limit
        self.limit = limit

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise ZipBomb(f"The zip expands to more than {_readable_size(self.limit)} (more than its headers declare); unpacking stopped.")


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, workdir: str, budget: _Budget) -> str:
    """Stream one entry to a temporary file of our own naming, enforcing sizes on the bytes really produced."""
    fd, temp = tempfile.mkstemp(dir=workdir, suffix=".dcm")
    written = 0
    limit = min(info.file_size, max_instance_bytes())
    try:
        with os.fdopen(fd, "wb") as out, archive.open(info) as entry:
            while chunk := entry.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise ZipRefused("This entry holds more data than its header declares; it was not kept.")
                if written > ZIP_RATIO_MIN_BYTES and written > ZIP_MAX_RATIO * max(info.compress_size, 1):
                    raise _bomb_entry(written, info.compress_size)
                budget.spend(len(chunk))
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        os.unlink(temp)
        raise ZipRefused(f"This entry of the zip is damaged ({exc}).") from None
    except NotImplementedError:
        os.unlink(temp)
        raise ZipRefused("This entry is compressed with a method the archive cannot read (use Deflate).") from None
    except OSError as exc:
        os.unlink(temp)
        raise StorageFailed(
            f"The archive could not unpack this entry ({exc.strerror or exc}); nothing was kept. Try again later."
        ) from None
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def ingest_zip(
    *,
    principal: Principal,
    path=None,
    fileobj: BinaryIO | None = None,
    source: str,
    address: str = "",
    progress: Progress | None = None,
) -> list[FileOutcome]:
    """Every file entry of a zip, each through ingest_instance; per-entry refusals do not stop the rest.

    Raises IngestRefused (nothing stored) when the caller may not send, the file is not a readable
    zip, or the zip as a whole is too large or has too many entries.
    """
    _may_register(principal, source=source, address=address)
    try:
        archive = zipfile.ZipFile(path if path is not None else fileobj)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        raise _refuse_whole(principal, ZipRefused(f"This is not a readable zip file ({exc})."), source=source, address=address) from None
    with archive:
        infos = archive.infolist()
        try:
            _check_declared(infos)
        except IngestRefused as refusal:
            raise _refuse_whole(principal, refusal, source=source, address=address) from None
        entries = [info for info in infos if not info.filename.endswith(("/", "\\"))]
        if not entries:
            raise _refuse_whole(principal, ZipRefused("This zip holds no files."), source=source, address=address)
        batch = _Batch(principal=principal, source=source, address=address, total=len(entries), progress=progress)
        budget = _Budget(settings.UPLOAD_MAX_UNCOMPRESSED_BYTES)
        try:
            with tempfile.TemporaryDirectory(prefix="medarchive-zip-", dir=settings.FILE_UPLOAD_TEMP_DIR) as workdir:
                for info in entries:
                    refusal = _entry_refusal(info)
                    if refusal is None and budget.left < 0:
                        refusal = ZipBomb("The zip's size limit was reached before this entry; it was not unpacked.")
                    if refusal is not None:
                        batch.refuse(info.filename, refusal, size=info.file_size)
                        continue
                    try:
                        temp = _unpack(archive, info, workdir, budget)
                    except IngestRefused as refused:
                        batch.refuse(info.filename, refused, size=info.file_size)
                        continue
                    try:
                        batch.ingest(info.filename, size=info.file_size, path=temp)
                    finally:
                        os.unlink(temp)
        finally:
            batch.close()
    return batch.outcomes


# --- Folder trees --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TreeFile:
    name: str  # relative to the root, with '/'
    path: str
    size: int = 0
    refusal: IngestRefused | None = None


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _link_out() -> NotDicom:
    return NotDicom("This is a symbolic link leading outside the folder; it was not followed.")


def _walk(root: str) -> Iterator[_TreeFile]:
    """Every file below root in a stable order; symbolic links leading out of root are refused, never followed."""
    real_root = os.path.realpath(root)
    unreadable: list[_TreeFile] = []

    def rel(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    def on_error(error: OSError) -> None:
        unreadable.append(
            _TreeFile(rel(error.filename), error.filename, refusal=NotDicom(f"This folder cannot be read ({error.strerror})."))
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames.sort()
        for name in dirnames:
            full = os.path.join(dirpath, name)
            # Not descended (followlinks=False); one leading inside root is read through its real place.
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                yield _TreeFile(rel(full), full, refusal=_link_out())
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                yield _TreeFile(rel(full), full, refusal=_link_out())
                continue
            try:
                info = os.stat(full)
            except OSError as exc:
                yield _TreeFile(rel(full), full, refusal=NotDicom(f"This file cannot be read ({exc.strerror})."))
                continue
            if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
                yield _TreeFile(rel(full), full, refusal=NotDicom("This is not a regular file."))
                continue
            yield _TreeFile(rel(full), full, size=info.st_size, refusal=_not_an_image(name, in_container=True))
        yield from unreadable
        unreadable.clear()
    yield from unreadable


def ingest_tree(*, principal: Principal, root, source: str, address: str = "", progress: Progress | None = None) -> list[FileOutcome]:
    """Every file below root (a DICOM disc, a PACS export), each through ingest_instance; refusals do not stop the rest."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    _may_register(principal, source=source, address=address)
    files = list(_walk(root))
    batch = _Batch(principal=principal, source=source, address=address, total=len(files), progress=progress)
    try:
        for file in files:
            if file.refusal is not None:
                batch.refuse(file.name, file.refusal, size=file.size)
            else:
                batch.ingest(file.name, size=file.size, path=file.path)
    finally:
        batch.close()
    return batch.outcomes
