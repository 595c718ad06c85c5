"""The software catalogue: provider staff register software and upload artifacts; licensed users download them.

Artifacts live in the "software" storage under names built from our own ids and their SHA-256. A download first reads the
stored file through and checks its SHA-256 against the one recorded at upload: a file that no longer matches is never
served, and provider staff (and the institution's admins) are alerted.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import BinaryIO

from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.urls import reverse

from images.storage import delete_quietly, durable_write
from subscribers import audit
from subscribers.access import Principal
from subscribers.models import Membership, User
from subscribers.services import notify

from ..errors import ArtifactCorrupted, LicenceRefused
from ..models import Software, SoftwareVersion
from ..processors import registry
from . import licences

CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")
BUILTIN_VENDOR = "medarchive"


def software_storage():
    return storages["software"]


def _clean(value: str, field: str, limit: int) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError({field: "This is required."})
    return value[:limit]


@transaction.atomic
def register_software(*, actor: Principal, name: str, vendor: str, intended_use: str, kind: str, processor_id: str = "") -> Software:
    actor.require_provider_staff()
    name, vendor = _clean(name, "name", 200), _clean(vendor, "vendor", 200)
    intended_use = _clean(intended_use, "intended_use", 5000)
    if kind not in Software.Kind.values:
        raise ValidationError({"kind": f"Choose one of: {', '.join(Software.Kind.values)}."})
    processor_id = (processor_id or "").strip() if kind == Software.Kind.SERVER_RUN else ""
    if kind == Software.Kind.SERVER_RUN:
        if not processor_id:
            raise ValidationError({"processor_id": "Software run on the server names its processing type."})
        if processor_id not in registry.available() and processor_id not in registry.unavailable():
            raise ValidationError({"processor_id": f"There is no processing type {processor_id!r} on this server."})
        if Software.objects.filter(processor_id=processor_id).exists():
            raise ValidationError({"processor_id": f"The processing type {processor_id!r} is already in the catalogue."})
    if Software.objects.filter(vendor=vendor, name=name).exists():
        raise ValidationError({"name": f"{vendor} already has software called {name!r} in the catalogue."})
    software = Software.objects.create(
        name=name,
        vendor=vendor,
        intended_use=intended_use,
        kind=kind,
        processor_id=processor_id,
        created_by=actor.user if actor.user else None,
    )
    audit.record(action="software.register", principal=actor, institution=None, obj=software, kind=kind, processor_id=processor_id)
    return software


def ensure_processor_software(*, actor: Principal, processor_id: str) -> Software:
    """The catalogue entry of an available processing type, registered from its own declaration when missing."""
    existing = Software.objects.filter(processor_id=processor_id).first()
    if existing is not None:
        return existing
    processor = registry.get(processor_id)
    if processor is None:
        raise ValidationError({"processor_id": f"There is no available processing type {processor_id!r} on this server."})
    try:
        return register_software(
            actor=actor,
            name=processor.name,
            vendor=BUILTIN_VENDOR,
            intended_use=processor.description or processor.name,
            kind=Software.Kind.SERVER_RUN,
            processor_id=processor_id,
        )
    except (ValidationError, IntegrityError):
        found = Software.objects.filter(processor_id=processor_id).first()
        if found is None:
            raise
        return found


def add_version(
    *, actor: Principal, software: Software, version: str, platform: str, fileobj: BinaryIO, file_name: str, release_notes: str = ""
) -> SoftwareVersion:
    """Store an artifact (streamed, hashed on the way) and record its version. Nothing is kept if anything fails."""
    actor.require_provider_staff()
    if software.kind != Software.Kind.DOWNLOADABLE:
        raise ValidationError("Only downloadable software has artifacts; server-run software is a processing type.")
    version, platform = _clean(version, "version", 64), _clean(platform, "platform", 64)
    if SoftwareVersion.objects.filter(software=software, version=version, platform=platform).exists():
        raise ValidationError({"version": f"Version {version} for {platform} is already in the catalogue."})
    file_name = _SAFE_NAME.sub("_", (file_name or "").rsplit("/", 1)[-1]).strip("._") or "artifact.bin"
    digest, size = hashlib.sha256(), 0
    fileobj.seek(0)
    while chunk := fileobj.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    if size == 0:
        raise ValidationError({"artifact": "The file is empty."})
    sha256 = digest.hexdigest()
    name = f"{software.pk}/{uuid.uuid4().hex}/{sha256[:16]}-{file_name}"[:400]
    fileobj.seek(0)
    durable_write(name, fileobj, storage=software_storage())
    try:
        with transaction.atomic():
            created = SoftwareVersion.objects.create(
                software=software,
                version=version,
                platform=platform,
                release_notes=(release_notes or "").strip(),
                file_name=file_name,
                storage_name=name,
                sha256=sha256,
                size_bytes=size,
                uploaded_by=actor.user if actor.user else None,
            )
            audit.record(action="software.version.add", principal=actor, obj=created, sha256=sha256, size_bytes=size)
    except BaseException:
        delete_quietly(name, storage=software_storage())
        raise
    return created


def _stored_sha256(version: SoftwareVersion) -> str | None:
    digest = hashlib.sha256()
    try:
        with software_storage().open(version.storage_name, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except (FileNotFoundError, OSError):
        return None
    return digest.hexdigest()


def open_download(*, principal: Principal, version: SoftwareVersion, address: str = "") -> BinaryIO:
    """The artifact, opened for streaming, after the licence allows it and the file is checked against its SHA-256.

    Raises LicenceRefused (403, audited) or ArtifactCorrupted (refused, audited, provider staff and admins alerted).
    A download counts as one use of the licence.
    """
    software = version.software
    try:
        licences.check_licence(principal=principal, software=software)
    except LicenceRefused as refusal:
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="download", address=address)
        raise
    found = _stored_sha256(version)
    if found != version.sha256:
        reason = (
            f"The stored file of {software.name} {version.version} ({version.platform}) "
            + ("is missing" if found is None else "no longer matches its SHA-256")
            + "; the download is refused and the provider has been alerted."
        )
        audit.record(
            action="software.download",
            principal=principal,
            outcome="failure",
            obj=version,
            address=address,
            reason=reason,
            expected_sha256=version.sha256,
            found_sha256=found or "",
        )
        admins = [
            m.user
            for m in Membership.objects.filter(institution=principal.institution, is_admin=True, is_active=True).select_related("user")
        ]
        staff = list(User.objects.filter(is_staff=True, is_active=True))
        notify(
            users=staff + admins,
            text=f"Integrity alert: the artifact of {software.name} {version.version} ({version.platform}) failed its SHA-256 check.",
            link=reverse("software-detail", kwargs={"software_id": software.pk}),
        )
        raise ArtifactCorrupted(reason)
    try:
        licences.use_licence(principal=principal, software=software, purpose="download")
    except LicenceRefused as refusal:
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="download", address=address)
        raise
    audit.record(
        action="software.download",
        principal=principal,
        obj=version,
        address=address,
        software=software.name,
        version=version.version,
        platform=version.platform,
        sha256=version.sha256,
        size_bytes=version.size_bytes,
    )
    return software_storage().open(version.storage_name, "rb")
