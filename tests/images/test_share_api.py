"""Sharing through the REST API and seeing it in the portal and over DICOMweb: appears for the receiver, gone on revocation."""

import pytest

from images.ingest import ingest_instance
from subscribers import services
from subscribers.models import AuditEvent, Notification
from tests.conftest import login
from tests.dicom_files import synth_bytes
from tests.factories import InstitutionFactory, member


@pytest.fixture
def study_a(principal_a):
    return ingest_instance(
        principal=principal_a, data=synth_bytes("CT", patient_name="Shared^Sam", patient_id="P-SH"), source="test"
    ).instance.study


def _token(principal, membership):
    return services.issue_token(actor=principal, membership=membership, name="api")[1]


def test_share_appears_for_the_receiver_everywhere_and_disappears_on_revocation(client, principal_a, admin_a, study_a, inst_b):
    reader_b = member(inst_b, "reader_b", ["receive"])
    token_a = _token(principal_a, admin_a)
    from tests.factories import principal_of

    token_b = _token(principal_of(reader_b), reader_b)
    uid = study_a.study_instance_uid
    created = client.post(
        f"/api/v1/studies/{uid}/shares",
        {"with_institution": "beta"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_a}",
    )
    assert created.status_code == 201 and created.json()["with_institution"] == "beta"
    listed = client.get(f"/api/v1/studies/{uid}/shares", HTTP_AUTHORIZATION=f"Bearer {token_a}").json()
    assert [s["with_institution"] for s in listed] == ["beta"]

    # DICOMweb: found and retrievable by the receiver.
    found = client.get("/dicomweb/studies", {"PatientID": "P-SH"}, HTTP_AUTHORIZATION=f"Bearer {token_b}").json()
    assert [s["0020000D"]["Value"][0] for s in found] == [uid]
    assert client.get(f"/dicomweb/studies/{uid}/metadata", HTTP_AUTHORIZATION=f"Bearer {token_b}").status_code == 200
    # Portal: listed as shared, with who shared it; a notification waits.
    login(client, reader_b.user)
    page = client.get("/studies/?shared=1").content.decode()
    assert "Shared^Sam" in page and "Shared by Alpha Hospital" in page
    assert Notification.objects.filter(user=reader_b.user, read_at__isnull=True).count() == 1
    assert "Alpha Hospital shared" in client.get("/notifications/").content.decode()
    client.post("/notifications/read/")
    assert not Notification.objects.filter(user=reader_b.user, read_at__isnull=True).exists()
    # The receiver cannot pass it on, nor see whom it was shared with.
    assert client.get(f"/api/v1/studies/{uid}/shares", HTTP_AUTHORIZATION=f"Bearer {token_b}").status_code == 404

    share_id = created.json()["id"]
    assert client.delete(f"/api/v1/shares/{share_id}", HTTP_AUTHORIZATION=f"Bearer {token_b}").status_code == 404
    assert client.delete(f"/api/v1/shares/{share_id}", HTTP_AUTHORIZATION=f"Bearer {token_a}").status_code == 204
    assert client.get("/dicomweb/studies", {"PatientID": "P-SH"}, HTTP_AUTHORIZATION=f"Bearer {token_b}").json() == []
    assert client.get(f"/dicomweb/studies/{uid}/metadata", HTTP_AUTHORIZATION=f"Bearer {token_b}").status_code == 404
    assert "Shared^Sam" not in client.get("/studies/").content.decode()
    assert set(AuditEvent.objects.filter(action__startswith="share.").values_list("action", flat=True)) == {"share.create", "share.revoke"}


def test_share_api_refuses_bad_requests_and_foreign_studies(client, principal_a, admin_a, principal_b, admin_b, study_a):
    token_a, token_b = _token(principal_a, admin_a), _token(principal_b, admin_b)
    uid = study_a.study_instance_uid
    post = lambda token, body: client.post(  # noqa: E731
        f"/api/v1/studies/{uid}/shares", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert post(token_a, {"with_institution": "nowhere"}).status_code == 400
    assert post(token_a, {"with_institution": "alpha"}).status_code == 400  # its own institution
    assert post(token_a, {}).status_code == 400
    assert post(token_a, {"with_institution": "beta", "expires_at": "2001-01-01T00:00:00Z"}).status_code == 400
    assert post(token_b, {"with_institution": "beta"}).status_code == 404  # B cannot see A's study at all


def test_whole_patient_share_through_the_api(client, principal_a, admin_a, study_a):
    gamma = InstitutionFactory(slug="gamma", name="Gamma")
    token_a = _token(principal_a, admin_a)
    response = client.post(
        f"/api/v1/studies/{study_a.study_instance_uid}/shares",
        {"with_institution": "gamma", "whole_patient": True},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_a}",
    )
    assert response.status_code == 201 and response.json()["patient_id"] == "P-SH" and gamma.pk
