"""Polling a DICOMweb endpoint (QIDO-RS, then WADO-RS) with credentials. The endpoint here is a real HTTP server: this
archive's own DICOMweb service in a live server, holding another institution's studies, reached with that
institution's bearer token as a subscriber's PACS would be."""

from __future__ import annotations

import pytest

from images.ingest import ingest_instance
from images.models import Instance, Study
from images.storage import open_instance
from software.models import PollRun
from software.polling import services
from software.polling.services import SourceSettings
from subscribers import services as subscriber_services
from subscribers.access import OPERATOR
from tests.software.test_polling import dated
from tests.software.volumes import as_bytes, volume

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def remote(inst_b, admin_b, principal_b):
    """inst_b's archive as the remote endpoint: a recent CT study, a recent MR study, and a token to read them."""
    ct = dated(volume("CT", slices=3, patient_id="PAT-W1"), 1)
    mr = dated(volume("MR", slices=2, patient_id="PAT-W2"), 1)
    for blob in as_bytes(ct) + as_bytes(mr):
        ingest_instance(principal=principal_b, data=blob, source="test")
    _, raw = subscriber_services.issue_token(actor=OPERATOR, membership=admin_b, name="poller")
    return {"ct": ct, "mr": mr, "token": raw}


def web_source(inst, url: str, secret: str):
    return services.add_poll_source(
        principal=OPERATOR,
        institution=inst,
        source=SourceSettings(
            name="Web PACS",
            kind="dicomweb",
            url=url,
            secret=secret,
            processor_id="mip",
            parameters={},
            query={"Modality": "CT"},
            max_age_days=30,
        ),
    )


def stored_bytes(instance: Instance) -> bytes:
    with open_instance(instance.storage_name) as fh:
        return fh.read()


def test_dicomweb_source_is_searched_and_retrieved_with_its_bearer_token(live_server, inst_a, inst_b, license_a, remote):
    source = web_source(inst_a, f"{live_server.url}/dicomweb", remote["token"])

    run = services.poll_source(source_id=source.pk)

    assert (run.status, run.found, run.fetched, run.processed, run.failed, run.error) == ("done", 1, 1, 1, 0, "")
    study_uid = remote["ct"][0].StudyInstanceUID
    assert list(Study.objects.filter(institution=inst_a).values_list("study_instance_uid", flat=True)) == [study_uid]
    for theirs in Instance.objects.filter(institution=inst_b, study__study_instance_uid=study_uid):
        ours = Instance.objects.get(institution=inst_a, sop_instance_uid=theirs.sop_instance_uid)
        assert stored_bytes(ours) == stored_bytes(theirs)
    second = services.poll_source(source_id=source.pk)
    assert (second.found, second.fetched, second.processed) == (1, 0, 0)


def test_dicomweb_source_refusing_the_credentials_fails_the_poll_with_the_reason(live_server, inst_a, license_a, remote):
    source = web_source(inst_a, f"{live_server.url}/dicomweb", "mda_deadbeef_not-a-valid-token")

    run = services.poll_source(source_id=source.pk)

    assert run.status == PollRun.Status.FAILED
    assert run.error.endswith("refused our credentials for the study search (QIDO-RS) (HTTP 401); check the source's user name and secret.")
    assert "not-a-valid-token" not in run.error
    assert not Study.objects.filter(institution=inst_a).exists()


def test_a_web_server_that_is_not_dicomweb_fails_the_poll(live_server, inst_a, license_a):
    source = web_source(inst_a, f"{live_server.url}/healthz", "")

    run = services.poll_source(source_id=source.pk)

    assert run.status == PollRun.Status.FAILED
    assert run.error.startswith(f"DICOMweb endpoint {live_server.url}/healthz answered the study search (QIDO-RS) with")
