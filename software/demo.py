"""Demo data of the software app: the built-in processing types in the catalogue, a downloadable viewer with an
artifact, and licences for the demo institutions. `manage.py seed_demo` calls `seed_software`; running it again adds
only what is missing."""

from __future__ import annotations

import io
import zipfile

from subscribers.access import OPERATOR
from subscribers.models import Institution

from .models import Software
from .processors import registry
from .services import catalogue, licences

VIEWER = {
    "name": "medarchive Desktop Viewer",
    "vendor": "medarchive demo",
    "intended_use": "Viewing DICOM images downloaded from the archive on a workstation, for review (not for primary diagnosis).",
}
VIEWER_VERSION = "1.0.0"


def _viewer_artifact() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # A fixed timestamp: the demo artifact (and so its SHA-256) is the same on every machine.
        info = zipfile.ZipInfo("README.txt", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(info, "medarchive Desktop Viewer 1.0.0 (demo artifact).\n")
    return buffer.getvalue()


def seed_software(stdout, institutions: dict[str, Institution] | list[Institution]) -> dict:
    """Catalogue the built-ins and the demo viewer, and license every given institution for all of them."""
    targets = list(institutions.values()) if isinstance(institutions, dict) else list(institutions)
    entries = [catalogue.ensure_processor_software(actor=OPERATOR, processor_id=pid) for pid in sorted(registry.available())]
    viewer = Software.objects.filter(vendor=VIEWER["vendor"], name=VIEWER["name"]).first()
    if viewer is None:
        viewer = catalogue.register_software(actor=OPERATOR, kind=Software.Kind.DOWNLOADABLE, **VIEWER)
        stdout.write(f"  catalogue: {viewer.name}\n")
    if not viewer.versions.filter(version=VIEWER_VERSION).exists():
        catalogue.add_version(
            actor=OPERATOR,
            software=viewer,
            version=VIEWER_VERSION,
            platform="any",
            fileobj=io.BytesIO(_viewer_artifact()),
            file_name="medarchive-viewer-1.0.0.zip",
            release_notes="First release.",
        )
    entries.append(viewer)
    granted = 0
    for institution in targets:
        for software in entries:
            if licences.licence_of(institution, software) is None:
                licences.grant_licence(actor=OPERATOR, institution=institution, software=software)
                granted += 1
    if granted:
        stdout.write(f"  software: {granted} licence(s) for {len(targets)} institution(s), {len(entries)} catalogue entries\n")
    return {"software": entries}
