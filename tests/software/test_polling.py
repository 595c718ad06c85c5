"""Polling a subscriber's own archive: Debian's dcmtk dcmqrscp holding studies, reached over DICOM (C-FIND, C-GET).

A poll finds the studies matching the source's query and age window, fetches the new ones into the institution's
archive, starts the source's processing on each and has the products pushed back to a receiving AE (dcmtk's storescp);
a second poll processes nothing new; an unreachable, refusing or babbling source fails the poll with the reason and is
retried with backoff.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from images.models import Instance, Study
from software.models import Delivery, Licence, PolledStudy, PollRun, PollSource, ProcessingJob
from software.polling import services
from software.polling.services import SourceSettings
from software.services import runner
from subscribers.access import OPERATOR, NotVisible
from subscribers.models import AuditEvent, Notification
from tests.factories import ApplicationEntityFactory
from tests.software.conftest import builtin_software
from tests.software.dcmtk_peers import JunkServer, free_port, needs_dcmtk, start_pacs, start_storescp, stop
from tests.software.volumes import as_bytes, volume, voxels_of

pytestmark = [pytest.mark.django_db, needs_dcmtk]


def dated(datasets, days_ago: int, **attributes):
    day = (timezone.localdate() - timedelta(days=days_ago)).strftime("%Y%m%d")
    for ds in datasets:
        ds.StudyDate = ds.SeriesDate = day
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return datasets


@pytest.fixture
def pacs(tmp_path):
    process, running = start_pacs(tmp_path)
    yield running
    stop(process)


@pytest.fixture
def storescp(tmp_path):
    process, running = start_storescp(tmp_path)
    yield running
    stop(process)


@pytest.fixture
def receiver_ae(inst_a, storescp):
    return ApplicationEntityFactory(
        institution=inst_a, ae_title=storescp.ae_title, host="127.0.0.1", port=storescp.port, can_send=False, can_receive=True
    )


@pytest.fixture
def site_studies(pacs):
    """In the PACS: two recent CT studies, a recent MR study and a CT study 400 days old."""
    ct1 = dated(volume("CT", slices=6, patient_id="PAT-P1"), 2)
    ct2 = dated(volume("CT", slices=5, patient_id="PAT-P2", seed=11), 5)
    mr = dated(volume("MR", slices=4, patient_id="PAT-P3"), 1)
    old = dated(volume("CT", slices=3, patient_id="PAT-P4"), 400)
    for study in (ct1, ct2, mr, old):
        pacs.add(as_bytes(study))
    return {"ct1": ct1, "ct2": ct2, "mr": mr, "old": old}


def dicom_source(inst, pacs, **overrides) -> PollSource:
    values = {
        "name": "Site PACS",
        "kind": PollSource.Kind.DICOM,
        "ae_title": pacs.ae_title,
        "host": "127.0.0.1",
        "port": pacs.port,
        "processor_id": "mip",
        "parameters": {},
        "query": {"Modality": "CT"},
        "max_age_days": 30,
        "every_minutes": 10,
        **overrides,
    }
    return services.add_poll_source(principal=OPERATOR, institution=inst, source=SourceSettings(**values))


def node(ae_title: str, port: int) -> SimpleNamespace:
    """A DICOM node's address, for sources whose node is not the running PACS."""
    return SimpleNamespace(ae_title=ae_title, port=port)


def run_jobs_of(source) -> list[ProcessingJob]:
    """Run the queued jobs the polls started, here instead of in a worker."""
    jobs = ProcessingJob.objects.filter(pk__in=PolledStudy.objects.filter(source=source).values("job")).order_by("pk")
    return [runner.run_job(job.pk) for job in jobs]


def test_poll_fetches_new_matching_studies_processes_them_and_pushes_the_products_back(
    inst_a, license_a, pacs, site_studies, storescp, receiver_ae
):
    source = dicom_source(inst_a, pacs, delivery=Delivery.PUSH, push_ae=receiver_ae)

    run = services.poll_source(source_id=source.pk)

    assert (run.status, run.found, run.fetched, run.processed, run.failed, run.error) == ("done", 2, 2, 2, 0, "")
    wanted = {name: study[0].StudyInstanceUID for name, study in site_studies.items()}
    stored = {s.study_instance_uid: s for s in Study.objects.filter(institution=inst_a)}
    assert set(stored) == {wanted["ct1"], wanted["ct2"]}  # not the MR study, not the one older than 30 days
    for name in ("ct1", "ct2"):
        originals = {ds.SOPInstanceUID: ds for ds in site_studies[name]}
        kept = Instance.objects.filter(study=stored[wanted[name]])
        assert {i.sop_instance_uid for i in kept} == set(originals)
        assert all(i.source == "poll" for i in kept)

    jobs = run_jobs_of(source)
    assert [(j.status, j.processor_id, j.origin, j.delivery) for j in jobs] == [("succeeded", "mip", "poll", "push")] * 2
    received = storescp.received()
    for job in jobs:
        assert job.delivered_at is not None and job.delivery_error == ""
        product = job.products.get()
        study_name = "ct1" if job.study.study_instance_uid == wanted["ct1"] else "ct2"
        pushed = received[product.sop_instance_uid]
        # The pushed image is the maximum over the PACS's own slices, computed here without the processor.
        assert np.array_equal(pushed.pixel_array, voxels_of(site_studies[study_name]).max(axis=0))
        assert pushed.StudyInstanceUID == wanted[study_name]
    assert len(received) == 2
    source.refresh_from_db()
    assert source.failures == 0 and source.last_error == ""
    assert timedelta(minutes=9) < source.next_poll_at - timezone.now() <= timedelta(minutes=10)


def test_second_poll_processes_nothing_new_and_a_new_study_only_once_it_arrives(inst_a, license_a, pacs, site_studies):
    source = dicom_source(inst_a, pacs)
    services.poll_source(source_id=source.pk)
    jobs_before = ProcessingJob.objects.count()

    second = services.poll_source(source_id=source.pk)
    assert (second.status, second.found, second.fetched, second.processed, second.failed) == ("done", 2, 0, 0, 0)
    assert ProcessingJob.objects.count() == jobs_before

    arrived = dated(volume("CT", slices=4, patient_id="PAT-P5", seed=3), 0)
    pacs.add(as_bytes(arrived))
    third = services.poll_source(source_id=source.pk)
    assert (third.found, third.fetched, third.processed) == (3, 1, 1)
    assert PolledStudy.objects.get(source=source, study_instance_uid=arrived[0].StudyInstanceUID).job.status == "queued"


def test_study_description_matches_with_wildcards(inst_a, license_a, pacs):
    chest = dated(volume("CT", slices=3, patient_id="PAT-D1"), 1, StudyDescription="CT CHEST W CONTRAST")
    head = dated(volume("CT", slices=3, patient_id="PAT-D2"), 1, StudyDescription="CT HEAD")
    pacs.add(as_bytes(chest) + as_bytes(head))
    source = dicom_source(inst_a, pacs, query={"StudyDescription": "*CHEST*"})

    run = services.poll_source(source_id=source.pk)

    assert (run.found, run.processed) == (1, 1)
    assert list(Study.objects.filter(institution=inst_a).values_list("study_instance_uid", flat=True)) == [chest[0].StudyInstanceUID]


def test_a_key_the_pacs_cannot_match_fails_the_poll_instead_of_fetching_everything(inst_a, license_a, pacs, site_studies):
    source = dicom_source(inst_a, pacs, query={"BodyPartExamined": "CHEST"})  # dcmqrscp does not index BodyPartExamined

    run = services.poll_source(source_id=source.pk)

    assert run.status == PollRun.Status.FAILED
    assert run.error == f"PACS at 127.0.0.1:{pacs.port} does not support matching on BodyPartExamined; remove it from the source's query."
    assert not Study.objects.filter(institution=inst_a).exists()


def test_unreachable_source_is_retried_with_backoff_and_shown_to_its_admins(inst_a, admin_a, license_a):
    port = free_port()  # nothing listens there
    source = dicom_source(inst_a, node("GONE", port), every_minutes=10)

    first = services.poll_source(source_id=source.pk)
    source.refresh_from_db()
    assert first.status == PollRun.Status.FAILED
    assert first.error == f"PACS at 127.0.0.1:{port} could not be reached: Connection refused"
    assert (source.failures, source.last_error) == (1, first.error)
    assert timedelta(minutes=19) < source.next_poll_at - timezone.now() <= timedelta(minutes=20)  # 10 x 2^1
    notice = Notification.objects.get(user=admin_a.user)
    assert "Site PACS" in notice.text and "could not be reached" in notice.text

    services.poll_source(source_id=source.pk)
    source.refresh_from_db()
    assert source.failures == 2
    assert timedelta(minutes=39) < source.next_poll_at - timezone.now() <= timedelta(minutes=40)  # 10 x 2^2
    assert Notification.objects.filter(user=admin_a.user).count() == 1  # told once, at the first failure

    PollSource.objects.filter(pk=source.pk).update(failures=20)
    services.poll_source(source_id=source.pk)
    source.refresh_from_db()
    assert timedelta(hours=23, minutes=59) < source.next_poll_at - timezone.now() <= timedelta(hours=24)  # the cap
    events = AuditEvent.objects.filter(action="software.poll", object_id=str(source.pk))
    assert {e.outcome for e in events} == {"failure"} and events.count() == 3


def test_recovered_source_forgets_its_failures(inst_a, license_a, pacs, site_studies):
    source = dicom_source(inst_a, pacs)
    PollSource.objects.filter(pk=source.pk).update(failures=3, last_error="PACS at 127.0.0.1:1 could not be reached")

    run = services.poll_source(source_id=source.pk)

    source.refresh_from_db()
    assert run.status == "done"
    assert (source.failures, source.last_error) == (0, "")


def test_pacs_refusing_the_association_fails_the_poll_with_its_reason(inst_a, license_a, pacs, site_studies):
    source = dicom_source(inst_a, node("NOTTHEPACS", pacs.port))

    run = services.poll_source(source_id=source.pk)

    assert run.status == PollRun.Status.FAILED
    assert run.error.startswith(f"PACS at 127.0.0.1:{pacs.port} refused the association: Called AE title not recognised")
    assert not Study.objects.exists()


def test_source_answering_garbage_fails_cleanly(inst_a, license_a):
    junk = JunkServer()
    try:
        source = dicom_source(inst_a, node("JUNK", junk.port))
        run = services.poll_source(source_id=source.pk)
    finally:
        junk.close()

    assert run.status == PollRun.Status.FAILED
    assert run.error == f"PACS at 127.0.0.1:{junk.port} did not accept the association (it aborted or did not answer as a DICOM node)"
    assert (run.found, run.fetched, run.processed) == (0, 0, 0)
    assert junk.connections >= 1
    assert not Study.objects.exists() and not ProcessingJob.objects.exists()


def test_a_study_the_processing_refuses_is_failed_once_and_not_fetched_again(inst_a, license_a, pacs):
    scan = dated(volume("CT", slices=3, patient_id="PAT-R1"), 1)
    pacs.add(as_bytes(scan))
    source = dicom_source(inst_a, pacs, processor_id="mip", query={})
    # A MIP takes CT, MR, PET or NM volumes: the PACS also holds a CR image.
    cr = dated([volume("CT", slices=1, patient_id="PAT-R2")[0]], 1, Modality="CR", SOPClassUID="1.2.840.10008.5.1.4.1.1.1")
    for ds in cr:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    pacs.add(as_bytes(cr))

    first = services.poll_source(source_id=source.pk)
    assert (first.found, first.fetched, first.processed, first.failed) == (2, 2, 1, 1)
    assert "Not processed:" in first.error
    refused = PolledStudy.objects.get(source=source, study_instance_uid=cr[0].StudyInstanceUID)
    assert refused.job is None and refused.processed_at is not None and refused.error.startswith("Not processed:")

    second = services.poll_source(source_id=source.pk)
    assert (second.found, second.fetched, second.failed) == (2, 0, 0)


def test_licence_that_ran_out_fails_the_poll_before_anything_is_fetched(inst_a, license_a, pacs, site_studies):
    source = dicom_source(inst_a, pacs)

    today = timezone.localdate()
    Licence.objects.filter(institution=inst_a, software__processor_id="mip").update(
        valid_from=today - timedelta(days=10), valid_until=today - timedelta(days=1)
    )

    run = services.poll_source(source_id=source.pk)

    assert run.status == PollRun.Status.FAILED
    assert "expired" in run.error
    assert not Study.objects.filter(institution=inst_a).exists()


# --- Registering a source: bad input changes nothing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"processor_id": "no-such-type"}, "There is no processing type 'no-such-type'"),
        ({"parameters": {"slab_thickness_mm": -3}}, "slab_thickness_mm"),
        ({"parameters": {"colour": "red"}}, "'colour' is not a parameter"),
        ({"ae_title": "BAD\\AET"}, "An AE title is 1 to 16"),
        ({"port": 70000}, "port is between 1 and 65535"),
        ({"query": {"PatientName": "Doe*"}}, "Cannot match on 'PatientName'"),
        ({"query": {"Modality": ""}}, "give a value to match"),
        ({"every_minutes": 0}, "Poll every 1 to"),
        ({"max_age_days": -1}, "age window"),
        ({"delivery": Delivery.PUSH, "push_ae": None}, "Push delivery needs a receiving AE title"),
    ],
)
def test_add_poll_source_refuses_bad_settings_and_saves_nothing(inst_a, license_a, overrides, message):
    pacs = node("SITEPACS", 104)
    with pytest.raises(ValidationError) as refused:
        dicom_source(inst_a, pacs, **overrides)
    assert message in " ".join(refused.value.messages)
    assert not PollSource.objects.exists()


def test_add_poll_source_refuses_a_type_the_institution_is_not_licensed_for(inst_b):
    pacs = node("SITEPACS", 104)
    builtin_software("mip")
    with pytest.raises(ValidationError) as refused:
        dicom_source(inst_b, pacs)
    assert "no licence for Maximum intensity projection" in " ".join(refused.value.messages)
    assert not PollSource.objects.exists()


def test_push_to_another_institutions_receiver_is_refused(inst_a, inst_b, license_a):
    theirs = ApplicationEntityFactory(institution=inst_b, ae_title="BETASCP", host="127.0.0.1", port=104, can_receive=True)
    pacs = node("SITEPACS", 104)
    with pytest.raises(ValidationError, match="not an active receiver of Alpha Hospital"):
        dicom_source(inst_a, pacs, delivery=Delivery.PUSH, push_ae=theirs)
    assert not PollSource.objects.exists()


def test_institution_admin_adds_only_for_their_own_institution(inst_a, inst_b, principal_b, license_a):
    with pytest.raises(NotVisible):
        services.add_poll_source(
            principal=principal_b,
            institution=inst_a,
            source=SourceSettings(name="x", kind="dicom", ae_title="A", host="h", port=104, processor_id="mip", parameters={}, query={}),
        )
    assert not PollSource.objects.exists()


def test_dicomweb_address_with_credentials_in_it_is_refused(inst_a, license_a):
    with pytest.raises(ValidationError, match="not in the address"):
        services.add_poll_source(
            principal=OPERATOR,
            institution=inst_a,
            source=SourceSettings(
                name="web", kind="dicomweb", url="https://user:pw@pacs.example.org/dicom-web", processor_id="mip", parameters={}, query={}
            ),
        )
    assert not PollSource.objects.exists()
