"""Compression at rest: replace a stored file by its lossless re-encoding, only where the pixels decode identically.

The re-encoded file is written durably under a new name (storage names carry the file's hash), the index row is
switched to it in one transaction that also records the transfer syntax, size and SHA-256 as received and audits the
change, and the old file is deleted once that is committed. Compressed or lossy files, and anything the encoder cannot
take, are left as they are.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from subscribers import audit
from subscribers.access import Principal

from ..ingest.validation import metadata_json
from ..models import Instance
from ..storage import delete_quietly, durable_write, instance_name, open_instance
from ..transcode import (
    PIXEL_DATA,
    SPOOL_BYTES,
    CannotTranscode,
    PixelDescription,
    decoding_plugin,
    syntax_name,
    transcode,
    unavailable_reason,
)

# Files kept uncompressed as received. Deflated Explicit VR Little Endian is compressed already: left alone.
UNCOMPRESSED = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)


@dataclass(frozen=True)
class Outcome:
    status: str  # "compressed", "skipped" (left as it is, for a reason), "failed" (could not be read or written)
    reason: str = ""
    bytes_saved: int = 0


def candidates(institution_id: int) -> QuerySet[Instance]:
    """Instances stored uncompressed as received (never compressed at rest), with their series' modality."""
    return (
        Instance.objects.filter(
            institution_id=institution_id,
            transfer_syntax_uid__in=UNCOMPRESSED,
            original_transfer_syntax_uid="",
            rows__isnull=False,
        )
        .select_related("series")
        .only("pk", "study_id", "transfer_syntax_uid", "metadata", "compression_skipped_syntax", "series__modality")
        .order_by("pk")
    )


def precheck(instance: Instance, target: str) -> str | None:
    """Why instance is not worth opening for target, from the index alone; None when it is."""
    if instance.compression_skipped_syntax == target:
        return "found before not to gain from it"
    description = PixelDescription.of_metadata(instance.transfer_syntax_uid, instance.metadata)
    if not description.has_pixel_data:
        return "no pixel data"
    if description.lossy:
        return "lossy compressed before it was received"
    return unavailable_reason(description, target)


def _spool() -> tempfile.SpooledTemporaryFile:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=settings.FILE_UPLOAD_TEMP_DIR)


def _copy_hashed(source: BinaryIO, out: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
    out.seek(0)
    return digest.hexdigest()


def _sha256_of(fp: BinaryIO) -> str:
    fp.seek(0)
    digest = hashlib.sha256()
    while chunk := fp.read(1 << 20):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()


def _decoded(fp: BinaryIO, plugin: str = "") -> tuple:
    fp.seek(0)
    ds = dcmread(fp)
    if plugin:
        ds.pixel_array_options(decoding_plugin=plugin)
    return ds, ds.pixel_array


def high_bits_hold_data(ds, description: PixelDescription) -> bool:
    """Whether the stored pixel words carry bits above Bits Stored (retired embedded overlays, or junk).

    Decoders mask them off, so the decoded pixels would compare equal while the encoder drops them: not identical.
    Unsigned values must have them zero; signed values must repeat the sign bit in them (PS3.5 8.1.1).
    """
    allocated, stored = description.bits_allocated, description.bits_stored
    if allocated not in (8, 16) or not 0 < stored < allocated:
        return False
    order = ">" if description.transfer_syntax_uid == ExplicitVRBigEndian else "<"
    words = np.frombuffer(ds.PixelData, dtype=f"{order}u{allocated // 8}", count=len(ds.PixelData) // (allocated // 8))
    if description.pixel_representation == 0:
        return bool(np.any(words >> stored))
    high = words >> (stored - 1)  # the sign bit and everything above it
    return bool(np.any((high != 0) & (high != (1 << (allocated - stored + 1)) - 1)))


def identical(before: np.ndarray, after: np.ndarray) -> bool:
    """The same values of the same kind and width in the same shape (the byte order of the array may differ: a big
    endian file decodes to a big endian array)."""
    return (
        before.shape == after.shape
        and before.dtype.kind == after.dtype.kind
        and before.dtype.itemsize == after.dtype.itemsize
        and bool(np.array_equal(before, after))
    )


def _skip(instance: Instance, target: str, reason: str, *, dry_run: bool = False) -> Outcome:
    """Remember that target does not help this instance, so later runs do not re-encode it to find out again."""
    if not dry_run:
        Instance.objects.filter(pk=instance.pk, sha256=instance.sha256).update(compression_skipped_syntax=target)
    return Outcome("skipped", reason)


def compress_instance(*, instance: Instance, target: str, principal: Principal, actor: str = "", dry_run: bool = False) -> Outcome:
    """Replace instance's stored file by its lossless re-encoding in target when that decodes to identical pixels
    and is smaller. With dry_run everything is checked, and nothing written."""
    instance = Instance.objects.select_related("study__institution", "series").get(pk=instance.pk)
    if instance.transfer_syntax_uid not in UNCOMPRESSED or instance.original_transfer_syntax_uid:
        return Outcome("skipped", "already compressed")
    with _spool() as original, _spool() as encoded:
        try:
            with open_instance(instance.storage_name) as stored:
                sha256 = _copy_hashed(stored, original)
        except (OSError, ValueError) as error:
            return Outcome("failed", f"its file could not be read ({error})")
        if sha256 != instance.sha256:
            return Outcome("failed", "its stored file does not match its SHA-256; left for verification")
        before_ds = dcmread(original)
        description = PixelDescription.of_dataset(before_ds)
        if description.compressed or description.lossy or PIXEL_DATA not in before_ds:
            return _skip(instance, target, "compressed, lossy or without pixel data", dry_run=dry_run)
        if high_bits_hold_data(before_ds, description):
            _skip(instance, target, "", dry_run=dry_run)
            return Outcome(
                "failed", "bits above Bits Stored hold data (such as an embedded overlay) a re-encoding would lose; kept as received"
            )
        before = before_ds.pixel_array
        original.seek(0)
        try:
            transcode(original, target=target, out=encoded)
        except CannotTranscode as refusal:
            return _skip(instance, target, refusal.reason, dry_run=dry_run)
        size = encoded.tell()
        # Decoded the way delivery decodes it (images/transcode.py names the plugin), compared value for value.
        after_ds, after = _decoded(encoded, decoding_plugin(target))
        if not identical(before, after):
            _skip(instance, target, "", dry_run=dry_run)
            return Outcome("failed", f"{syntax_name(target)} did not decode to identical pixels; kept as received")
        if size >= instance.size_bytes:
            return _skip(
                instance, target, f"{syntax_name(target)} saves nothing ({size:,} bytes against {instance.size_bytes:,})", dry_run=dry_run
            )
        if dry_run:
            return Outcome("compressed", "", instance.size_bytes - size)
        new_sha256 = _sha256_of(encoded)
        name = instance_name(
            institution_id=instance.institution_id,
            study_uid=instance.study.study_instance_uid,
            series_uid=instance.series.series_instance_uid,
            sop_uid=instance.sop_instance_uid,
            sha256=new_sha256,
        )
        try:
            durable_write(name, encoded)
        except Exception as error:  # OSError locally; botocore errors from an object store
            return Outcome("failed", f"the compressed file could not be written ({getattr(error, 'strerror', None) or error})")
        try:
            return _switch(instance, principal=principal, actor=actor, target=target, name=name, sha256=new_sha256, size=size, ds=after_ds)
        except BaseException:
            if not Instance.objects.filter(storage_name=name).exists():
                delete_quietly(name)
            raise


def _switch(instance: Instance, *, principal, actor, target, name, sha256, size, ds) -> Outcome:
    with transaction.atomic():
        current = Instance.objects.select_for_update().filter(pk=instance.pk).first()
        if current is None or current.sha256 != instance.sha256 or current.storage_name != instance.storage_name:
            # Deleted or replaced ("keep newest") while we encoded: the new file belongs to nothing.
            transaction.on_commit(lambda: delete_quietly(name))
            return Outcome("skipped", "changed while it was being compressed")
        old_name, saved = current.storage_name, current.size_bytes - size
        current.original_transfer_syntax_uid = current.transfer_syntax_uid
        current.original_size_bytes = current.size_bytes
        current.original_sha256 = current.sha256
        current.transfer_syntax_uid = target
        current.size_bytes = size
        current.sha256 = sha256
        current.storage_name = name
        current.metadata = metadata_json(ds)
        current.photometric_interpretation = str(ds.get("PhotometricInterpretation", "")).strip()[:16]
        current.compressed_at = timezone.now()
        current.compression_skipped_syntax = ""
        current.save()
        audit.record(
            action="instance.compress",
            principal=principal,
            actor=actor,
            institution=instance.study.institution,
            object_type="images.instance",
            object_id=current.sop_instance_uid,
            object_repr=current.sop_instance_uid,
            study_instance_uid=instance.study.study_instance_uid,
            transfer_syntax_from=current.original_transfer_syntax_uid,
            transfer_syntax_to=target,
            bytes_from=current.original_size_bytes,
            bytes_to=size,
            sha256_from=current.original_sha256,
            sha256_to=sha256,
        )
        transaction.on_commit(lambda: delete_quietly(old_name))
    return Outcome("compressed", "", saved)
