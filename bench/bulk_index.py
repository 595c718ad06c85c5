"""Index rows of synthetic studies (bench.synthetic) written straight into medarchive's database, without files.

    DJANGO_SETTINGS_MODULE=medarchive.settings DATABASE_URL=... python -m bench.bulk_index --institution SLUG --start 0 --count 800
    ... python -m bench.bulk_index --institution SLUG --check 0,1,2      # compare with rows the real ingest made

Loading 100,000 instances through the ingest path takes far too long for a benchmark (each object is fsynced twice
and committed on its own), and QIDO-RS reads only the index. So the rows are built here the way the ingest service
builds them — with its own helpers (`_text`, `parse_da`, `parse_tm`, `instance_name`, the imaging conditions and the
metadata JSON of the same data set) — and written with bulk_create, a few thousand per transaction. `--check` builds
the rows of studies that were sent through STOW-RS and compares them field by field with what the ingest stored, so
a bulk-loaded archive is known to hold the same index a real one would. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time

BATCH_STUDIES = 500
# Fields that differ between two stores of the same object by nature (ids, times, the stored file's own name/hash).
IGNORED = {"id", "institution", "patient", "study", "series", "created_at", "received_at", "last_received_at"}


def _setup():
    import django

    django.setup()


def _conditions(modality_datasets: dict, modality: str, part10: bytes) -> dict:
    """The imaging conditions the ingest would extract (from the first object of each modality, read with pydicom)."""
    if modality not in modality_datasets:
        from pydicom import dcmread

        from images import conditions as imaging_conditions

        modality_datasets[modality] = imaging_conditions.extract(dcmread(io.BytesIO(part10)))
    return modality_datasets[modality]


def build(institution, numbers: list[int], conditions_cache: dict | None = None) -> dict:
    """Field values of the patient, study, series and instance rows of synthetic studies, as the ingest sets them.

    Returns {"patients": {patient_id: fields}, "studies": [fields], "series": [fields], "instances": [fields]}; series
    name their study by "study_uid", instances their series by "series_uid" (foreign keys are resolved on insert).
    """
    from images.ingest.validation import parse_da, parse_tm
    from images.storage import instance_name

    from . import synthetic

    conditions_cache = {} if conditions_cache is None else conditions_cache
    rows: dict = {"patients": {}, "studies": [], "series": [], "instances": []}
    for number in numbers:
        s = synthetic.study(number)
        study_bytes = 0
        series_rows = []
        for series_number in range(synthetic.SERIES_PER_STUDY):
            series_uid = s.series_uid(series_number)
            series_bytes = 0
            for n in range(synthetic.INSTANCES_PER_SERIES):
                items = synthetic.elements(s, series_number, n)
                values = {tag: v[0] for tag, _, v in items}
                data = synthetic.part10(items)
                sha256 = hashlib.sha256(data).hexdigest()
                modality = values[0x00080060]
                conditions = _conditions(conditions_cache, modality, data)
                if n == 0:
                    series_rows.append(
                        {
                            "study_uid": s.study_uid,
                            "series_instance_uid": series_uid,
                            "modality": modality,
                            "series_number": series_number + 1,
                            "series_description": values[0x0008103E],
                            "body_part_examined": values[0x00180015],
                            "series_date": parse_da(values[0x00080021]),
                            "series_time": parse_tm(values[0x00080031]),
                            "acquiring_institution_name": values[0x00080080],
                            "manufacturer": values[0x00080070],
                            "manufacturer_model_name": values[0x00081090],
                            "station_name": values[0x00081010],
                            "conditions": conditions,
                        }
                    )
                if n == 0 and series_number == 0:
                    rows["patients"].setdefault(
                        s.patient_id,
                        {
                            "patient_id": values[0x00100020],
                            "issuer_of_patient_id": "",
                            "patient_name": values[0x00100010],
                            "patient_name_search": values[0x00100010].upper(),
                            "patient_birth_date": parse_da(values[0x00100030]),
                            "patient_sex": values[0x00100040],
                        },
                    )
                    study_row = {
                        "patient_id_value": s.patient_id,
                        "study_instance_uid": s.study_uid,
                        "study_date": parse_da(values[0x00080020]),
                        "study_time": parse_tm(values[0x00080030]),
                        "accession_number": values[0x00080050],
                        "study_id": values[0x00200010],
                        "study_description": values[0x00081030],
                        "referring_physician_name": values[0x00080090],
                        "modalities_in_study": s.modalities_in_study,
                        "number_of_series": synthetic.SERIES_PER_STUDY,
                        "number_of_instances": synthetic.INSTANCES_PER_STUDY,
                    }
                rows["instances"].append(
                    {
                        "series_uid": series_uid,
                        "study_uid": s.study_uid,
                        "sop_class_uid": values[0x00080016],
                        "sop_instance_uid": values[0x00080018],
                        "instance_number": values[0x00200013],
                        "transfer_syntax_uid": synthetic.ExplicitVRLittleEndian,
                        "rows": values[0x00280010],
                        "columns": values[0x00280011],
                        "number_of_frames": 1,
                        "bits_allocated": values[0x00280100],
                        "photometric_interpretation": values[0x00280004],
                        "size_bytes": len(data),
                        "sha256": sha256,
                        "dataset_sha256": hashlib.sha256(data[_dataset_offset(data) :]).hexdigest(),
                        "storage_name": instance_name(
                            institution_id=institution.pk,
                            study_uid=s.study_uid,
                            series_uid=series_uid,
                            sop_uid=values[0x00080018],
                            sha256=sha256,
                        ),
                        "conditions": conditions,
                        "metadata": synthetic.metadata(items),
                        "source": "stow-rs",
                    }
                )
                series_bytes += len(data)
            series_rows[-1].update(number_of_instances=synthetic.INSTANCES_PER_SERIES, size_bytes=series_bytes)
            study_bytes += series_bytes
        study_row["size_bytes"] = study_bytes
        rows["studies"].append(study_row)
        rows["series"].extend(series_rows)
    return rows


def _dataset_offset(data: bytes) -> int:
    from images.ingest.service import _dataset_offset as offset

    return offset(data[: 1 << 16])


INSTANCE_COLUMNS = [
    "institution_id", "study_id", "series_id", "sop_class_uid", "sop_instance_uid", "instance_number", "transfer_syntax_uid",
    "rows", "columns", "number_of_frames", "bits_allocated", "photometric_interpretation", "size_bytes", "sha256",
    "dataset_sha256", "storage_name", "conditions", "metadata", "source", "received_at",
]  # fmt: skip


def insert(institution, start: int, count: int) -> dict:
    """Insert the rows of synthetic studies start .. start+count-1, BATCH_STUDIES per transaction.

    Patients, studies and series with bulk_create (their ids are needed); instances, the bulk of the data (about 2 KB of
    metadata JSON each), with COPY, which is ~10x faster than bulk_create's array parameters for such rows.
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from images.models import Instance, Patient, Series, Study

    totals = {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    build_seconds = write_seconds = 0.0
    conditions_cache: dict = {}
    table = Instance._meta.db_table
    for first in range(start, start + count, BATCH_STUDIES):
        numbers = list(range(first, min(first + BATCH_STUDIES, start + count)))
        started = time.perf_counter()
        rows = build(institution, numbers, conditions_cache)
        build_seconds += time.perf_counter() - started
        started = time.perf_counter()
        now = timezone.now()
        with transaction.atomic():
            # Patients may already exist (two studies a patient; a batch boundary may split them).
            patient_pks = dict(
                Patient.objects.filter(institution=institution, patient_id__in=list(rows["patients"]), issuer_of_patient_id="").values_list(
                    "patient_id", "pk"
                )
            )
            new = [Patient(institution=institution, **fields) for pid, fields in rows["patients"].items() if pid not in patient_pks]
            for patient in Patient.objects.bulk_create(new, batch_size=2000):
                patient_pks[patient.patient_id] = patient.pk
            studies = [
                Study(institution=institution, patient_id=patient_pks[fields["patient_id_value"]], **_without(fields, "patient_id_value"))
                for fields in rows["studies"]
            ]
            study_pks = {study.study_instance_uid: study.pk for study in Study.objects.bulk_create(studies, batch_size=2000)}
            series = [
                Series(institution=institution, study_id=study_pks[fields["study_uid"]], **_without(fields, "study_uid"))
                for fields in rows["series"]
            ]
            series_pks = {row.series_instance_uid: row.pk for row in Series.objects.bulk_create(series, batch_size=2000)}
            with connection.cursor() as cursor:
                columns = ", ".join(f'"{column}"' for column in INSTANCE_COLUMNS)
                with cursor.cursor.copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
                    for fields in rows["instances"]:
                        values = {
                            **fields,
                            "institution_id": institution.pk,
                            "study_id": study_pks[fields["study_uid"]],
                            "series_id": series_pks[fields["series_uid"]],
                            "conditions": json.dumps(fields["conditions"]),
                            "metadata": json.dumps(fields["metadata"]),
                            "received_at": now,
                        }
                        copy.write_row([values[column] for column in INSTANCE_COLUMNS])
        write_seconds += time.perf_counter() - started
        totals["patients"] += len(new)
        totals["studies"] += len(studies)
        totals["series"] += len(series)
        totals["instances"] += len(rows["instances"])
    return {**totals, "build_seconds": round(build_seconds, 2), "write_seconds": round(write_seconds, 2)}


def _without(fields: dict, *names: str) -> dict:
    return {key: value for key, value in fields.items() if key not in names}


def check(institution, numbers: list[int]) -> dict:
    """Rows built here vs rows the ingest made for the same synthetic studies: the differing fields, if any."""
    from django.forms.models import model_to_dict

    from images.models import Instance, Patient, Series, Study

    rows = build(institution, numbers)
    differences: list[str] = []

    def compare(label, built: dict, stored):
        if stored is None:
            differences.append(f"{label}: not stored")
            return
        stored_fields = model_to_dict(stored)
        for key, value in built.items():
            if key in ("patient_id_value", "study_uid", "series_uid"):
                continue
            if stored_fields.get(key) != value:
                differences.append(f"{label}.{key}: built {str(value)[:80]!r} stored {str(stored_fields.get(key))[:80]!r}")
        missing = set(stored_fields) - set(built) - IGNORED
        if missing:
            differences.append(f"{label}: fields not built: {sorted(missing)}")

    for pid, built in rows["patients"].items():
        compare(f"patient {pid}", built, Patient.objects.filter(institution=institution, patient_id=pid).first())
    for built in rows["studies"]:
        compare(f"study {built['study_instance_uid']}", built, Study.objects.filter(study_instance_uid=built["study_instance_uid"]).first())
    for built in rows["series"]:
        uid = built["series_instance_uid"]
        compare(f"series {uid}", built, Series.objects.filter(series_instance_uid=uid).first())
    for built in rows["instances"]:
        uid = built["sop_instance_uid"]
        compare(f"instance {uid}", built, Instance.objects.filter(sop_instance_uid=uid).first())
    return {
        "checked_studies": len(rows["studies"]),
        "checked_instances": len(rows["instances"]),
        "differences": differences[:20],
        "ok": not differences,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--institution", required=True, help="slug of the owning institution")
    parser.add_argument("--start", type=int, default=0, help="first synthetic study number")
    parser.add_argument("--count", type=int, default=0, help="number of synthetic studies to insert")
    parser.add_argument("--check", metavar="N,N,...", help="compare built rows with stored rows for these study numbers instead")
    args = parser.parse_args(argv)
    _setup()
    from subscribers.models import Institution

    institution = Institution.objects.get(slug=args.institution)
    started = time.perf_counter()
    result = check(institution, [int(n) for n in args.check.split(",")]) if args.check else insert(institution, args.start, args.count)
    result["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
