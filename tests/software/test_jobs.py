"""Processing jobs through the service and the runner: products beside their source, retries, failures, limits, the
research collection, notification."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from pydicom import dcmread

from images.models import Instance, Series, Study
from images.selectors import studies_visible_to
from images.synthetic import to_bytes
from software.models import ProcessingItem, ProcessingJob, ResearchCollection
from software.services import jobs, runner
from subscribers.access import principal_for_user
from subscribers.models import AuditEvent, Notification
from tests.conftest import login, stored_files
from tests.dicom_files import bundled_bytes
from tests.software.conftest import builtin_software, read_stored
from tests.software.dicom_checks import dciodvfy_errors
from tests.software.volumes import voxels_of


def submit(principal, processor_id, uids, **parameters):
    return jobs.submit_job(principal=principal, processor_id=processor_id, parameters=parameters, uids=uids, queue=False)


def test_mip_job_stores_its_product_in_the_same_study_found_by_qido_beside_the_source(client, admin_a, principal_a, ct_series, license_a):
    series = ct_series[0].series
    study = series.study
    originals = {i.sop_instance_uid: i.sha256 for i in ct_series}
    job = runner.run_job(submit(principal_a, "mip", [series.series_instance_uid]).pk)
    assert job.status == ProcessingJob.Status.SUCCEEDED, job.error
    product = job.products.get()
    assert product.instance.study_id == study.pk and product.instance.series_id != series.pk
    ds = read_stored(product.instance)
    assert np.array_equal(ds.pixel_array, voxels_of([read_stored(i) for i in ct_series]).max(axis=0))
    assert ds.ContributingEquipmentSequence[-1].SoftwareVersions == "mip 1.0"
    assert ds.DerivationDescription == 'Maximum intensity projection (mip 1.0); parameters {"slab_thickness_mm": null}'
    with open(stored_path(product.instance), "rb") as fh:
        assert dciodvfy_errors(fh.read()) == []
    # The originals are untouched, and both are queryable.
    assert {i.sop_instance_uid: i.sha256 for i in Instance.objects.filter(pk__in=[i.pk for i in ct_series])} == originals
    login(client, admin_a.user)
    found = client.get(f"/dicomweb/studies/{study.study_instance_uid}/series", HTTP_ACCEPT="application/dicom+json").json()
    assert {s["0020000E"]["Value"][0] for s in found} == {series.series_instance_uid, product.series_instance_uid}
    assert Study.objects.get(pk=study.pk).number_of_instances == len(ct_series) + 1


def stored_path(instance):
    from images.storage import archive_storage

    return archive_storage().path(instance.storage_name)


def test_a_retried_job_finds_its_products_and_never_stores_them_twice(principal_a, ct_series, license_a):
    job = runner.run_job(submit(principal_a, "mpr", [ct_series[0].series.series_instance_uid], step=4).pk)
    assert job.status == ProcessingJob.Status.SUCCEEDED, job.error
    stored = Instance.objects.filter(study=job.study).count()
    files = stored_files(job_storage_root())
    # As if the worker died after storing the products but before recording the job's end: the task runs again.
    job.items.update(status=ProcessingItem.Status.PENDING)
    ProcessingJob.objects.filter(pk=job.pk).update(
        status=ProcessingJob.Status.RUNNING, progress_done=0, instances_processed=0, finished_at=None
    )
    job = runner.run_job(job.pk)
    assert job.status == ProcessingJob.Status.SUCCEEDED
    assert Instance.objects.filter(study=job.study).count() == stored
    assert stored_files(job_storage_root()) == files
    assert job.attempts == 2


def job_storage_root():
    from images.storage import archive_storage

    return Path(archive_storage().location)


def test_an_item_the_processor_cannot_handle_fails_with_its_reason_and_the_others_go_on(
    principal_a, inst_a, store_in, ct_series, license_a
):
    study_uid = ct_series[0].study.study_instance_uid
    # A colour ultrasound image in the same study: the greyscale filter cannot take it.
    colour = dcmread(io.BytesIO(bundled_bytes("examples_rgb_color.dcm")))
    colour.StudyInstanceUID, colour.PatientID = study_uid, "PAT-VOL"
    [us] = store_in(inst_a, [to_bytes(colour)])
    job = runner.run_job(submit(principal_a, "denoise", [study_uid]).pk)
    assert job.status == ProcessingJob.Status.PARTIAL
    failed = job.items.get(status=ProcessingItem.Status.FAILED)
    assert failed.source_uids == [us.sop_instance_uid] and "greyscale" in failed.error
    assert job.items.filter(status=ProcessingItem.Status.DONE).count() == len(ct_series)
    assert job.products.count() == len(ct_series)
    assert "1 of 9 items failed" in job.error


def test_a_plugin_that_raises_fails_the_job_and_leaves_no_half_product(principal_a, ct_series, test_plugins, license_a):
    license_a("exploding")
    before = set(Instance.objects.values_list("pk", flat=True))
    series_before = Series.objects.count()
    job = runner.run_job(submit(principal_a, "exploding", [ct_series[0].series.series_instance_uid]).pk)
    assert job.status == ProcessingJob.Status.FAILED
    assert "RuntimeError: plugin bug" in job.error
    assert set(Instance.objects.values_list("pk", flat=True)) == before
    assert Series.objects.count() == series_before
    assert job.products.count() == 0
    assert AuditEvent.objects.filter(action="processing.products.remove", object_id=str(job.pk)).exists()


def test_a_job_past_its_time_limit_is_stopped_and_leaves_no_product(settings, principal_a, ct_series, test_plugins, license_a):
    license_a("sleepy")
    settings.PROCESSING_TIME_LIMIT_SECONDS = 1
    before = Instance.objects.count()
    job = runner.run_job(submit(principal_a, "sleepy", [ct_series[0].series.series_instance_uid]).pk)
    assert job.status == ProcessingJob.Status.FAILED
    assert "time limit of 1 s" in job.error
    assert Instance.objects.count() == before


def test_a_job_that_would_need_more_memory_than_its_limit_fails_before_loading(settings, principal_a, ct_series, license_a):
    settings.PROCESSING_MEMORY_LIMIT_MB = 64
    job = submit(principal_a, "mip", [ct_series[0].series.series_instance_uid])
    ProcessingJob.objects.filter(pk=job.pk).update(memory_limit_mb=64)
    Instance.objects.filter(pk__in=[i.pk for i in ct_series]).update(rows=4096, columns=4096)  # as the index says
    job = runner.run_job(job.pk)
    assert job.status == ProcessingJob.Status.FAILED and "memory limit of 64 MB" in job.error


def test_a_cancelled_job_does_not_run(principal_a, ct_series, license_a):
    job = submit(principal_a, "mip", [ct_series[0].series.series_instance_uid])
    jobs.cancel_job(principal=principal_a, job=job)
    job = runner.run_job(job.pk)
    assert job.status == ProcessingJob.Status.CANCELLED
    assert job.products.count() == 0


def test_the_requester_is_notified_with_a_link_to_the_job(principal_a, admin_a, ct_series, license_a):
    job = runner.run_job(submit(principal_a, "mip", [ct_series[0].series.series_instance_uid]).pk)
    note = Notification.objects.get(user=admin_a.user)
    assert note.link == reverse("processing-job", kwargs={"job_id": job.pk})
    assert "Maximum intensity projection 1.0" in note.text and "succeeded" in note.text


def test_deidentified_products_go_to_a_separate_research_collection_never_linked_to_the_originals(
    principal_a, admin_a, ct_series, license_a
):
    study = ct_series[0].study
    job = runner.run_job(submit(principal_a, "deidentify", [study.study_instance_uid], retain_dates=True).pk)
    assert job.status == ProcessingJob.Status.SUCCEEDED, job.error
    research = ResearchCollection.objects.get(institution=principal_a.institution).research_institution
    products = list(Instance.objects.filter(institution=research))
    assert len(products) == len(ct_series)
    assert Instance.objects.filter(study=study).count() == len(ct_series)  # nothing added beside the originals
    # The requester can look at the research collection as a member of it; what it sees names nothing of the originals.
    research_view = principal_for_user(admin_a.user, research.pk)
    [research_study] = studies_visible_to(research_view)
    assert research_study.study_instance_uid != study.study_instance_uid
    assert research_study.patient.patient_id != "PAT-VOL"
    shown = str([i.metadata for i in products]) + str(research_study.__dict__) + str(research_study.patient.__dict__)
    for original in (study.study_instance_uid, "PAT-VOL", "Volume^Vera", *[i.sop_instance_uid for i in ct_series]):
        assert original not in shown
    # The identified institution's users do not see the research study there.
    assert not studies_visible_to(principal_a).filter(pk=research_study.pk).exists()
    assert job.instances_processed == len(ct_series)


def test_unlicensed_type_is_refused_and_the_refusal_audited(principal_b, inst_b, store_in):
    from tests.software.volumes import as_bytes, volume

    [first, *_] = store_in(inst_b, as_bytes(volume("CT", slices=2)))
    builtin_software("mip")
    from software.errors import LicenceRefused

    with pytest.raises(LicenceRefused, match="no licence for Maximum intensity projection"):
        submit(principal_b, "mip", [first.series.series_instance_uid])
    assert ProcessingJob.objects.count() == 0
    assert AuditEvent.objects.filter(action="licence.refused", institution=inst_b, outcome="denied").exists()
