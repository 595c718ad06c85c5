"""Jobs commit their items in batches (software/services/runner.py) and reformats name their sources compactly: every
item counted once, a failing batch leaving neither index rows nor files, and MPR headers that do not grow with the
volume."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from pydicom import dcmread

from images.models import Instance, Series
from images.storage import archive_storage
from images.synthetic import make_dataset, to_bytes
from software.models import ProcessingItem, ProcessingJob
from software.processors import registry
from software.processors.base import ProcessingContext
from software.processors.derived import part10
from software.services import jobs, runner
from subscribers.models import AuditEvent
from tests.conftest import stored_files
from tests.software.dicom_checks import dciodvfy_errors, run_processor
from tests.software.volumes import volume


@pytest.fixture
def small_batches(monkeypatch):
    """Three items a batch, so an 8-image series makes three batches."""
    monkeypatch.setattr(runner, "BATCH_ITEMS", 3)


def submit(principal, processor_id, uids, **parameters):
    return jobs.submit_job(principal=principal, processor_id=processor_id, parameters=parameters, uids=uids, queue=False)


def test_a_job_of_several_batches_stores_every_product_once_in_one_series_and_counts_every_item(
    principal_a, ct_series, license_a, small_batches
):
    before = Instance.objects.count()
    job = runner.run_job(submit(principal_a, "denoise", [ct_series[0].series.series_instance_uid]).pk)
    assert job.status == ProcessingJob.Status.SUCCEEDED, job.error
    assert job.progress_done == job.progress_total == len(ct_series)
    assert job.instances_processed == len(ct_series)
    assert job.items.filter(status=ProcessingItem.Status.DONE).count() == len(ct_series)
    products = list(job.products.select_related("instance"))
    assert len({p.sop_instance_uid for p in products}) == len(ct_series)
    assert Instance.objects.count() == before + len(ct_series)
    [series] = Series.objects.filter(series_instance_uid__in={p.series_instance_uid for p in products})
    assert series.number_of_instances == len(ct_series)


def test_a_product_refused_in_a_later_batch_fails_the_job_and_leaves_no_product_and_no_file(
    principal_a, inst_a, store_in, ct_series, license_a, small_batches, django_capture_on_commit_callbacks
):
    job = submit(principal_a, "denoise", [ct_series[0].series.series_instance_uid])
    # Another object already holds the UID the fifth item's product will get: its batch (the second) is refused.
    fifth = job.items.get(position=4).source_uids[0]
    context = ProcessingContext(
        job_id=job.pk,
        processor=registry.get("denoise"),
        parameters=job.parameters,
        created_at=job.created_at,
        secret=settings.SECRET_KEY.encode(),
    )
    squatter = make_dataset("CT", rows=8, cols=8, patient_id="PAT-VOL", study_uid=ct_series[0].study.study_instance_uid)
    squatter.SOPInstanceUID = squatter.file_meta.MediaStorageSOPInstanceUID = context.uid("instance", fifth)
    store_in(inst_a, [to_bytes(squatter)])
    instances = set(Instance.objects.values_list("pk", flat=True))
    files = stored_files(Path(archive_storage().location))

    with django_capture_on_commit_callbacks(execute=True):
        job = runner.run_job(job.pk)

    assert job.status == ProcessingJob.Status.FAILED
    assert "already stored with different content" in job.error
    assert job.products.count() == 0
    assert set(Instance.objects.values_list("pk", flat=True)) == instances
    assert stored_files(Path(archive_storage().location)) == files
    removal = AuditEvent.objects.get(action="processing.products.remove", object_id=str(job.pk))
    assert removal.detail["instances"] == 3  # the first batch, committed, taken out again
    assert removal.detail["discarded"] == 3  # the second, never stored


def test_each_reformatted_image_names_its_source_series_once_and_the_slices_of_its_first_and_last_rows():
    sources = volume("CT", slices=7, rows=12, columns=10)
    by_height = sorted(sources, key=lambda ds: float(ds.ImagePositionPatient[2]))
    products = run_processor("mpr", sources)
    assert len(products) == 12 + 10
    for product in products:
        [related] = product.RelatedSeriesSequence
        assert related.SeriesInstanceUID == sources[0].SeriesInstanceUID
        assert related.StudyInstanceUID == sources[0].StudyInstanceUID
        assert related.PurposeOfReferenceCodeSequence[0].CodeValue == "121323"
        assert [r.ReferencedSOPInstanceUID for r in product.SourceImageSequence] == [
            by_height[-1].SOPInstanceUID,  # the top row of a cut is the highest slice
            by_height[0].SOPInstanceUID,
        ]
    assert dciodvfy_errors(part10(products[0])) == []


def test_a_reformatted_image_header_does_not_grow_with_the_number_of_slices():
    def header_bytes(slices: int) -> int:
        [product, *_] = run_processor("mpr", volume("CT", slices=slices, rows=8, columns=8), {"planes": ["coronal"]})
        data = part10(product)
        return len(data) - len(dcmread(io.BytesIO(data)).PixelData)

    assert header_bytes(60) - header_bytes(6) < 64  # a few digits more in numbers, not 54 more references
