"""The processing API (/api/v1/processing/) as a script uses it, with a bearer token."""

from __future__ import annotations

import pytest

from software.models import ProcessingJob
from software.services import runner
from subscribers import services
from subscribers.access import OPERATOR
from tests.software.conftest import builtin_software
from tests.software.volumes import as_bytes, volume


@pytest.fixture
def api_a(client, admin_a, principal_a):
    token = services.issue_token(actor=principal_a, membership=admin_a, name="script")[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def api_b(admin_b, principal_b):
    from django.test import Client

    token = services.issue_token(actor=principal_b, membership=admin_b, name="script")[1]
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def post_job(client, **body):
    return client.post("/api/v1/processing/jobs", body, content_type="application/json")


def test_submitting_a_job_answers_201_with_type_version_and_parameters_then_its_status(api_a, ct_series, license_a):
    series_uid = ct_series[0].series.series_instance_uid
    response = post_job(api_a, type="mip", parameters={"slab_thickness_mm": 5}, series=[series_uid])
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["type"], body["version"], body["parameters"], body["status"]) == ("mip", "1.0", {"slab_thickness_mm": 5}, "queued")
    assert body["progress"] == {"done": 0, "total": 1}
    runner.run_job(body["id"])
    status = api_a.get(body["url"]).json()
    assert status["status"] == "succeeded"
    assert status["products"]["instances"] == 4  # 8 slices of 2.5 mm in slabs of 5 mm
    [product_series] = status["products"]["series"]
    assert len(product_series["sop_instance_uids"]) == 4
    assert status["items"][0]["status"] == "done"


def test_a_type_the_institution_is_not_licensed_for_is_403_with_the_reason(api_b, inst_b, store_in):
    [first, *_] = store_in(inst_b, as_bytes(volume("CT", slices=2)))
    builtin_software("mip")
    response = post_job(api_b, type="mip", study=first.study.study_instance_uid)
    assert response.status_code == 403
    assert response.json() == {
        "error": "Your institution has no licence for Maximum intensity projection; request one from the software catalogue.",
        "code": "unlicensed",
    }
    assert ProcessingJob.objects.count() == 0


def test_an_expired_licence_is_403_saying_when_it_expired(api_a, ct_series, license_a):
    from datetime import date

    from software.services import licences

    licences.grant_licence(
        actor=OPERATOR,
        institution=ct_series[0].institution,
        software=builtin_software("mip"),
        valid_from=date(2020, 1, 1),
        valid_until=date(2021, 6, 30),
    )
    response = post_job(api_a, type="mip", study=ct_series[0].study.study_instance_uid)
    assert response.status_code == 403
    assert response.json()["error"].endswith("expired on 2021-06-30.")
    assert response.json()["code"] == "licence_expired"


def test_images_of_another_institution_are_404(api_b, admin_b, inst_b, ct_series):
    from software.services import licences

    licences.grant_licence(actor=OPERATOR, institution=inst_b, software=builtin_software("mip"))
    response = post_job(api_b, type="mip", study=ct_series[0].study.study_instance_uid)
    assert response.status_code == 404
    assert ProcessingJob.objects.count() == 0


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"slab_thickness_mm": -3}, "slab_thickness_mm"),
        ({"slab_thickness_mm": "thick"}, "slab_thickness_mm"),
        ({"slab": 3}, "slab"),
    ],
)
def test_parameters_outside_the_schema_are_400_naming_the_parameter(api_a, ct_series, license_a, parameters, named):
    response = post_job(api_a, type="mip", parameters=parameters, study=ct_series[0].study.study_instance_uid)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == named and repr(named) in body["error"]
    assert ProcessingJob.objects.count() == 0


def test_an_unknown_type_is_400(api_a, ct_series, license_a):
    response = post_job(api_a, type="no-such", study=ct_series[0].study.study_instance_uid)
    assert response.status_code == 400 and "no processing type 'no-such'" in response.json()["error"]


def test_another_institutions_job_is_404_and_cannot_be_cancelled(api_a, api_b, ct_series, license_a):
    job_id = post_job(api_a, type="mip", study=ct_series[0].study.study_instance_uid).json()["id"]
    assert api_b.get(f"/api/v1/processing/jobs/{job_id}").status_code == 404
    assert api_b.post(f"/api/v1/processing/jobs/{job_id}/cancel").status_code == 404
    assert api_a.post(f"/api/v1/processing/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_types_list_the_schema_and_whether_the_institution_may_run_each(api_a, ct_series, license_a):
    types = {t["id"]: t for t in api_a.get("/api/v1/processing/types").json()["types"]}
    assert {"mip", "minip", "meanip", "mpr", "denoise", "clahe", "deidentify", "transcode"} <= set(types)
    assert types["mip"]["licensed"] is True
    assert types["mpr"]["scope"] == "series" and types["mpr"]["modalities"] == ["CT", "MR"]
    assert types["deidentify"]["parameters_schema"]["properties"]["retain_dates"]["type"] == "boolean"


def test_a_user_without_the_run_software_role_is_403(client, clinician_a, ct_series, license_a):
    from tests.conftest import login

    login(client, clinician_a.user)
    response = client.get("/api/v1/processing/types")
    assert response.status_code == 403 and "Run software" in response.json()["error"]
