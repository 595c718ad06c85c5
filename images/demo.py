"""Demo images for trying medarchive out: a few studies per demo institution, one of them shared.

`manage.py seed_demo` runs `seed_images` after the subscribers step. Images go through the same
ingest service as any C-STORE or upload (as the operator registering for the institution), so the
index, the imaging conditions and the audit trail are exactly what real data gets. Pydicom's bundled
scanner files (CT, MR, US, CR) sit beside synthesized series large enough to scroll and reformat
(a 48-slice CT for the viewer's MPR). UIDs are fixed, so running it again adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pydicom import dcmread
from pydicom.data import get_testdata_file

from subscribers.access import Principal
from subscribers.models import Institution, Role

from .ingest.bulk import operator_for
from .ingest.service import IngestCache, ingest_instance
from .models import Share, Study
from .sharing import services as sharing
from .synthetic import make_dataset, to_bytes

# A fixed UID root for the demo (2.25 + a fixed UUID-derived number), so a second seed finds what the first made.
_ROOT = "2.25.31415926535897932384626433832795"


def _uid(*parts: int) -> str:
    return ".".join([_ROOT, *map(str, parts)])


@dataclass(frozen=True)
class DemoSeries:
    modality: str
    count: int
    rows: int
    description: str


@dataclass(frozen=True)
class DemoStudy:
    number: int
    patient_id: str
    patient_name: str
    description: str
    study_date: date
    series: tuple[DemoSeries, ...]
    site: str


DEMO_STUDIES = {
    "demo-general": (
        DemoStudy(
            1,
            "GEN-1001",
            "Example^Chris",
            "CT chest with contrast",
            date(2026, 11, 2),
            (DemoSeries("CT", 48, 256, "Axial 1.25 mm"), DemoSeries("CT", 12, 256, "Scout and low dose")),
            "St. Demo General Hospital",
        ),
        DemoStudy(
            2,
            "GEN-1002",
            "Sample^Alex^M",
            "MR brain",
            date(2026, 10, 14),
            (DemoSeries("MR", 20, 192, "T2 TSE axial"),),
            "St. Demo General Hospital",
        ),
        DemoStudy(
            3,
            "GEN-1003",
            "Muster^Erika",
            "Hand X-ray",
            date(2026, 9, 30),
            (DemoSeries("CR", 1, 512, "Hand PA"), DemoSeries("DX", 1, 512, "Chest PA")),
            "Demoville Outpatient Clinic",
        ),
    ),
    "demo-imaging": (
        DemoStudy(
            4,
            "IMG-2001",
            "Example^Chris",
            "PET/CT whole body",
            date(2026, 11, 20),
            (DemoSeries("PT", 24, 128, "FDG whole body"),),
            "Demo Imaging Centre",
        ),
        DemoStudy(
            5,
            "IMG-2002",
            "Beispiel^Max",
            "Abdominal ultrasound",
            date(2026, 11, 18),
            (DemoSeries("US", 3, 256, "Liver"),),
            "Demo Imaging Centre",
        ),
    ),
}
# Scanner files that ship with pydicom (real acquisition parameters), ingested into demo-general.
BUNDLED_FILES = ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm")


def _files_of(study: DemoStudy):
    for series_number, demo_series in enumerate(study.series, start=1):
        for index in range(demo_series.count):
            ds = make_dataset(
                demo_series.modality,
                rows=demo_series.rows,
                cols=demo_series.rows,
                patient_id=study.patient_id,
                patient_name=study.patient_name,
                study_uid=_uid(study.number),
                series_uid=_uid(study.number, series_number),
                sop_uid=_uid(study.number, series_number, index + 1),
                instance_number=index + 1,
                series_number=series_number,
                study_description=study.description,
                series_description=demo_series.description,
                accession_number=f"DEMO{study.number:04d}",
                study_date=study.study_date,
                institution_name=study.site,
                seed=study.number,
            )
            yield to_bytes(ds)


def seed_images(stdout, institutions: dict[str, Institution]) -> dict:
    """Ingest the demo studies that are missing and share one study of demo-imaging with demo-general."""
    studies: dict[str, list[Study]] = {}
    for slug, demo_studies in DEMO_STUDIES.items():
        institution = institutions[slug]
        principal = operator_for(institution)
        cache = IngestCache()
        made = []
        for demo in demo_studies:
            existing = Study.objects.filter(institution=institution, study_instance_uid=_uid(demo.number)).first()
            if existing is None:
                for data in _files_of(demo):
                    ingest_instance(principal=principal, data=data, source="import", cache=cache)
                existing = Study.objects.get(institution=institution, study_instance_uid=_uid(demo.number))
                stdout.write(f"  {institution.name}: {demo.description} ({existing.number_of_instances} images)\n")
            made.append(existing)
        studies[slug] = made
    general = institutions["demo-general"]
    principal = operator_for(general)
    cache = IngestCache()
    for name in BUNDLED_FILES:
        path = get_testdata_file(name)
        uid = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        if not Study.objects.filter(institution=general, study_instance_uid=uid).exists():
            ingest_instance(principal=principal, path=path, source="import", cache=cache)
            stdout.write(f"  {general.name}: pydicom's {name}\n")
    shared = studies["demo-imaging"][0]
    if not Share.objects.active().filter(study=shared, with_institution=general).exists():
        operator = Principal(kind="operator", institution=shared.institution, roles=frozenset({Role.ADMIN}), is_provider_staff=True)
        sharing.share(principal=operator, study=shared, with_institution=general, note="Demo: prior PET/CT")
        stdout.write(f"  {shared.institution.name} shared '{shared.study_description}' with {general.name}\n")
    return {"studies": studies}
