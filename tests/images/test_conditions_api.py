"""GET /api/v1/studies/{study}/series/{series}/conditions: a series' acquisition parameters with units, and what varies."""

import pytest
from pydicom.uid import generate_uid

from images.ingest import ingest_instance
from images.models import Study
from images.sharing.services import revoke, share
from subscribers import services
from subscribers.models import AuditEvent
from tests.dicom_files import make_dataset, to_bytes
from tests.factories import member, principal_of


@pytest.fixture
def token_a(admin_a, principal_a):
    return services.issue_token(actor=principal_a, membership=admin_a, name="script")[1]


@pytest.fixture
def token_b(admin_b, principal_b):
    return services.issue_token(actor=principal_b, membership=admin_b, name="script")[1]


def store(principal, modality="CT", **kwargs):
    """One instance; keyword arguments that are DICOM keywords set attributes (e.g. KVP=100)."""
    attributes = {key: kwargs.pop(key) for key in list(kwargs) if key[0].isupper()}
    ds = make_dataset(modality, rows=8, cols=8, **kwargs)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ingest_instance(principal=principal, data=to_bytes(ds), source="test").instance


@pytest.fixture
def ct_series(principal_a):
    """A CT series of three instances; the third was taken at 100 kV and 300 mA instead of 120 kV and 250 mA."""
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in (1, 2):
        store(principal_a, study_uid=study_uid, series_uid=series_uid, instance_number=number)
    store(principal_a, study_uid=study_uid, series_uid=series_uid, instance_number=3, KVP=100, XRayTubeCurrent=300)
    return study_uid, series_uid


def conditions(client, study_uid, series_uid, token):
    return client.get(f"/api/v1/studies/{study_uid}/series/{series_uid}/conditions", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_ct_series_answers_its_parameters_with_units_and_what_varies(client, token_a, ct_series, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        response = conditions(client, *ct_series, token_a)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["modality"] == "CT" and body["series_instance_uid"] == ct_series[1]
    rows = {row["keyword"]: row for row in body["conditions"]}
    assert rows["KVP"] == {"keyword": "KVP", "label": "Peak kilovoltage", "value": 120.0, "display": "120 kV"}
    assert rows["XRayTubeCurrent"]["display"] == "250 mA" and rows["ExposureTime"]["display"] == "500 ms"
    assert rows["ConvolutionKernel"]["display"] == "B30f" and rows["CTDIvol"]["display"] == "8.5 mGy"
    assert rows["SliceThickness"]["display"] == "1.25 mm" and rows["PixelSpacing"]["display"] == "0.7 \\ 0.7 mm"
    # In the modality's order, then the common ones.
    assert [row["keyword"] for row in body["conditions"]][:4] == ["KVP", "XRayTubeCurrent", "ExposureTime", "Exposure"]
    assert body["varies"] == {"KVP": [120.0, 100.0], "XRayTubeCurrent": [250, 300]}


def test_series_whose_instances_agree_varies_in_nothing(client, token_a, principal_a):
    instance = store(principal_a, "MR")
    body = conditions(client, instance.study.study_instance_uid, instance.series.series_instance_uid, token_a).json()
    assert {row["keyword"]: row["display"] for row in body["conditions"]}["MagneticFieldStrength"] == "3 T"
    assert body["varies"] == {}


def test_reading_the_conditions_is_audited(client, token_a, inst_a, ct_series):
    conditions(client, *ct_series, token_a)
    event = AuditEvent.objects.get(action="conditions.read")
    assert event.institution == inst_a and event.object_type == "images.series" and event.object_id == ct_series[1]
    assert event.detail == {"study_instance_uid": ct_series[0]}


def test_another_institution_and_anonymous_callers_get_nothing(client, token_b, ct_series):
    response = conditions(client, *ct_series, token_b)
    assert response.status_code == 404 and response.json() == {"error": "Not found.", "code": "not_found"}
    assert client.get(f"/api/v1/studies/{ct_series[0]}/series/{ct_series[1]}/conditions").status_code in (401, 403)
    assert not AuditEvent.objects.filter(action="conditions.read").exists()


def test_series_of_another_study_is_not_found(client, token_a, principal_a, ct_series):
    other = store(principal_a)
    assert conditions(client, other.study.study_instance_uid, ct_series[1], token_a).status_code == 404


def test_shared_series_is_readable_by_the_receiver_until_revoked(client, principal_a, inst_b, ct_series):
    reader = member(inst_b, "reader_b", ["receive"])
    token = services.issue_token(actor=principal_of(reader), membership=reader, name="viewer")[1]
    given = share(principal=principal_a, study=Study.objects.get(study_instance_uid=ct_series[0]), with_institution=inst_b)
    assert conditions(client, *ct_series, token).json()["modality"] == "CT"
    revoke(principal=principal_a, share=given)
    assert conditions(client, *ct_series, token).status_code == 404
