"""Push delivery of a job's products by C-STORE (software/delivery.py) to a receiving AE title of the institution, here
dcmtk's storescp: the received objects carry the products' pixels, in their stored transfer syntax or converted for a
receiver that does not take it; an unreachable or refusing receiver leaves the reason on the job, and a retry delivers.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from software.delivery import DeliveryFailed, deliver
from software.models import Delivery, ProcessingJob
from software.polling.tasks import DELIVERY_RETRIES, deliver_job
from software.services import jobs, runner
from subscribers.models import AuditEvent
from tests.factories import ApplicationEntityFactory
from tests.software.conftest import read_stored
from tests.software.dcmtk_peers import free_port, needs_dcmtk, start_pacs, start_storescp, stop
from tests.software.volumes import voxels_of

pytestmark = [pytest.mark.django_db, needs_dcmtk]


@pytest.fixture
def storescp(tmp_path):
    process, running = start_storescp(tmp_path)
    yield running
    stop(process)


def receiver(inst, *, port: int, ae_title: str = "SITESCP", **flags):
    values = {"can_send": False, "can_receive": True, **flags}
    return ApplicationEntityFactory(institution=inst, ae_title=ae_title, host="127.0.0.1", port=port, **values)


def push_job(principal, instances, push_ae, *, processor_id="mip", parameters=None) -> ProcessingJob:
    uids = [instances[0].series.series_instance_uid]
    job = jobs.submit_job(
        principal=principal, processor_id=processor_id, parameters=parameters or {}, uids=uids, delivery=Delivery.PUSH, push_ae=push_ae
    )
    return runner.run_job(job.pk)


def delivery_events(job, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, object_id=str(job.pk)).order_by("pk"))


def test_every_product_reaches_the_receiver_with_its_pixels(principal_a, inst_a, ct_series, license_a, storescp):
    push_ae = receiver(inst_a, port=storescp.port)

    job = push_job(principal_a, ct_series, push_ae, parameters={"slab_thickness_mm": 5})  # 8 slices of 2.5 mm: 4 slabs

    assert job.status == "succeeded", job.error
    assert job.delivered_at is not None and job.delivery_error == ""
    products = {p.sop_instance_uid: p for p in job.products.select_related("instance")}
    received = storescp.received()
    assert set(received) == set(products) and len(products) == 4
    volume = voxels_of([read_stored(i) for i in ct_series])
    for number, (uid, product) in enumerate(sorted(products.items(), key=lambda item: item[1].instance.instance_number)):
        assert received[uid].PixelData == read_stored(product.instance).PixelData
        assert np.array_equal(received[uid].pixel_array, volume[number * 2 : number * 2 + 2].max(axis=0))
    [event] = delivery_events(job, "software.job.delivered")
    assert (event.outcome, event.detail["sent"], event.detail["destination"]) == ("success", 4, str(push_ae))


def test_compressed_products_go_as_stored_or_converted_for_a_receiver_without_that_syntax(
    principal_a, inst_a, ct_series, license_a, tmp_path
):
    as_stored_process, takes_all = start_storescp(tmp_path / "all", accept_all=True)
    plain_process, takes_plain = start_storescp(tmp_path / "plain", accept_all=False)
    try:
        job = push_job(
            principal_a,
            ct_series[:2],
            receiver(inst_a, port=takes_all.port),
            processor_id="transcode",
            parameters={"transfer_syntax": "rle-lossless"},
        )
        assert job.status == "succeeded", job.error
        ProcessingJob.objects.filter(pk=job.pk).update(
            push_ae=receiver(inst_a, port=takes_plain.port, ae_title="PLAINSCP"), delivered_at=None
        )
        deliver(job)
        as_stored, converted = takes_all.received(), takes_plain.received()
    finally:
        stop(as_stored_process)
        stop(plain_process)

    products = list(job.products.select_related("instance"))
    assert {p.instance.transfer_syntax_uid for p in products} == {RLELossless}
    assert set(as_stored) == set(converted) == {p.sop_instance_uid for p in products}
    for product in products:
        kept = read_stored(product.instance)
        assert as_stored[product.sop_instance_uid].file_meta.TransferSyntaxUID == RLELossless
        assert as_stored[product.sop_instance_uid].PixelData == kept.PixelData  # the stored bytes, untouched
        assert converted[product.sop_instance_uid].file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert np.array_equal(converted[product.sop_instance_uid].pixel_array, kept.pixel_array)


def test_unreachable_receiver_leaves_the_reason_on_the_job_and_a_retry_delivers(principal_a, inst_a, ct_series, license_a, tmp_path):
    port = free_port()
    push_ae = receiver(inst_a, port=port)

    job = push_job(principal_a, ct_series, push_ae)

    assert job.status == "succeeded"  # the processing succeeded; its delivery did not
    assert job.delivered_at is None
    assert job.delivery_error == f"PACS at 127.0.0.1:{port} could not be reached: Connection refused"
    [failed] = delivery_events(job, "software.job.delivery_failed")
    assert failed.outcome == "failure" and failed.detail["reason"] == job.delivery_error

    process, running = start_storescp(tmp_path, port=port)
    try:
        deliver_job.apply(args=[job.pk])
        received = running.received()
    finally:
        stop(process)
    job.refresh_from_db()
    assert job.delivered_at is not None and job.delivery_error == ""
    assert set(received) == {job.products.get().sop_instance_uid}
    deliver_job.apply(args=[job.pk])  # delivered already: nothing is sent again
    assert len(delivery_events(job, "software.job.delivered")) == 1


def test_deliver_task_tries_again_with_backoff_then_gives_up(principal_a, inst_a, ct_series, license_a):
    push_ae = receiver(inst_a, port=free_port())
    job = push_job(principal_a, ct_series, push_ae)

    deliver_job.apply(args=[job.pk])  # eagerly: each retry runs at once

    attempts = delivery_events(job, "software.job.delivery_failed")
    assert len(attempts) == 1 + 1 + DELIVERY_RETRIES  # the runner's own attempt, then the task's first try and its retries
    job.refresh_from_db()
    assert job.delivered_at is None and "could not be reached" in job.delivery_error


def test_receiver_refusing_the_association_is_named(principal_a, inst_a, ct_series, license_a, tmp_path):
    process, pacs = start_pacs(tmp_path)  # a dcmtk node that knows only its own AE title
    try:
        job = push_job(principal_a, ct_series, receiver(inst_a, port=pacs.port, ae_title="NOTKNOWN"))
    finally:
        stop(process)

    assert job.delivered_at is None
    assert job.delivery_error.startswith(f"PACS at 127.0.0.1:{pacs.port} refused the association: Called AE title not recognised")


def test_receiver_deactivated_after_the_job_was_accepted_is_sent_nothing(principal_a, inst_a, ct_series, license_a, storescp):
    push_ae = receiver(inst_a, port=storescp.port)
    job = jobs.submit_job(
        principal=principal_a,
        processor_id="mip",
        parameters={},
        uids=[ct_series[0].series.series_instance_uid],
        delivery=Delivery.PUSH,
        push_ae=push_ae,
    )
    push_ae.is_active = False
    push_ae.save()

    job = runner.run_job(job.pk)

    assert job.delivered_at is None
    assert job.delivery_error == f"AE title {push_ae} has been deactivated."
    assert storescp.received() == {}


def test_pull_job_is_never_pushed(principal_a, ct_series, license_a, storescp):
    job = jobs.submit_job(principal=principal_a, processor_id="mip", parameters={}, uids=[ct_series[0].series.series_instance_uid])
    job = runner.run_job(job.pk)

    assert deliver(job) is None
    assert storescp.received() == {}
    with pytest.raises(DeliveryFailed):
        ProcessingJob.objects.filter(pk=job.pk).update(delivery=Delivery.PUSH, push_ae=receiver(job.institution, port=free_port()))
        deliver(job)
