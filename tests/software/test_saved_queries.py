"""Saved queries (software/services/saved_queries.py): what they match, running a processing type on every own study
they match, through the service, the REST API, the `process` command and the portal page."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from images.models import Instance
from images.selectors import studies_visible_to
from images.sharing.services import share
from images.synthetic import make_dataset, to_bytes
from software.errors import InvalidParameters, LicenceRefused
from software.models import ProcessingJob, SavedQuery
from software.services import runner, saved_queries
from subscribers import services
from subscribers.access import NotVisible
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.software.conftest import builtin_software, read_stored
from tests.software.volumes import volume, voxels_of


def ct_study(store_in, institution, *, patient_name, description, days_ago, modality="CT", slices=4):
    datasets = volume(modality, slices=slices, patient_name=patient_name, patient_id=f"PID-{patient_name[:6].upper()}")
    day = timezone.localdate() - timedelta(days=days_ago)
    for ds in datasets:
        ds.StudyDescription = description
        ds.StudyDate = ds.SeriesDate = day.strftime("%Y%m%d")
    stored = store_in(institution, [to_bytes(ds) for ds in datasets])
    return stored[0].study, datasets


@pytest.fixture
def archive(inst_a, inst_b, store_in, principal_b, admin_a):
    """Alpha's own studies, and a Beta study of a DOE patient shared with Alpha (visible to it, never processed by it)."""
    john, john_ds = ct_study(store_in, inst_a, patient_name="Doe^John", description="CHEST CT", days_ago=3)
    jane, jane_ds = ct_study(store_in, inst_a, patient_name="Doe^Jane", description="CHEST CT", days_ago=40)
    bob, _ = ct_study(store_in, inst_a, patient_name="Dole^Bob", description="HEAD MR", days_ago=1, modality="MR")
    shared, _ = ct_study(store_in, inst_b, patient_name="Doe^Shared", description="CHEST CT", days_ago=2)
    share(principal=principal_b, study=shared, with_institution=inst_a)
    return {"john": john, "jane": jane, "bob": bob, "shared": shared, "john_ds": john_ds, "jane_ds": jane_ds}


def save(principal, name="q", **match):
    max_age_days = match.pop("max_age_days", None)
    return saved_queries.save_query(principal=principal, name=name, match=match, max_age_days=max_age_days)


def matched(principal, saved):
    return set(saved_queries.matching_studies(principal, saved).values_list("study_instance_uid", flat=True))


def uids(*studies):
    return {s.study_instance_uid for s in studies}


def test_matching_follows_dicom_wildcards_modality_and_the_date_window_on_own_studies_only(principal_a, archive):
    # The shared study is visible to Alpha (worklist, viewer), so leaving it out below is the saved query's doing.
    assert archive["shared"].pk in set(studies_visible_to(principal_a).values_list("pk", flat=True))
    assert matched(principal_a, save(principal_a, "doe", PatientName="doe*")) == uids(archive["john"], archive["jane"])
    assert matched(principal_a, save(principal_a, "one letter", PatientName="DO?^*")) == uids(archive["john"], archive["jane"])
    assert matched(principal_a, save(principal_a, "mr", Modality="MR")) == uids(archive["bob"])
    assert matched(principal_a, save(principal_a, "recent ct", ModalitiesInStudy="CT", max_age_days=7)) == uids(archive["john"])
    today = timezone.localdate()
    window = f"{today - timedelta(days=45):%Y%m%d}-{today - timedelta(days=30):%Y%m%d}"
    assert matched(principal_a, save(principal_a, "range", StudyDate=window)) == uids(archive["jane"])
    assert matched(principal_a, save(principal_a, "chest", StudyDescription="CHEST*")) == uids(archive["john"], archive["jane"])


@pytest.mark.parametrize(
    ("match", "max_age_days", "says"),
    [
        ({"SeriesDescription": "x"}, None, "Cannot match on 'SeriesDescription'"),
        ({"StudyDate": "2026-01-01"}, None, "StudyDate"),
        ({}, None, "at least one thing to match"),
        ({"PatientName": "DOE*"}, 0, "age window"),
    ],
)
def test_a_bad_match_is_refused_and_nothing_is_saved(principal_a, match, max_age_days, says):
    with pytest.raises(ValidationError, match=says):
        saved_queries.save_query(principal=principal_a, name="bad", match=match, max_age_days=max_age_days)
    assert SavedQuery.objects.count() == 0


def test_a_name_is_unique_within_the_institution_not_across(principal_a, principal_b):
    save(principal_a, "chest", PatientName="A*")
    with pytest.raises(ValidationError, match="already has a saved query named 'chest'"):
        save(principal_a, "chest", PatientName="B*")
    save(principal_b, "chest", PatientName="B*")
    assert SavedQuery.objects.count() == 2


def test_a_run_makes_one_mip_job_per_matched_own_study_with_real_products(principal_a, archive, license_a):
    saved = save(principal_a, "doe ct", PatientName="DOE*", Modality="CT")
    shared_count = Instance.objects.filter(study=archive["shared"]).count()
    run = saved_queries.run_saved_query(principal=principal_a, saved_query=saved, processor_id="mip", parameters={}, queue=False)
    assert {job.study.study_instance_uid for job in run.jobs} == uids(archive["john"], archive["jane"])
    assert run.skipped == []
    sources = {archive["john"].pk: archive["john_ds"], archive["jane"].pk: archive["jane_ds"]}
    for job in run.jobs:
        job = runner.run_job(job.pk)
        assert job.status == ProcessingJob.Status.SUCCEEDED, job.error
        product = job.products.get()
        assert product.instance.study_id == job.study_id
        assert np.array_equal(read_stored(product.instance).pixel_array, voxels_of(sources[job.study_id]).max(axis=0))
    # The study only shared with Alpha got no job and no product.
    assert Instance.objects.filter(study=archive["shared"]).count() == shared_count
    assert not ProcessingJob.objects.filter(study=archive["shared"]).exists()
    event = AuditEvent.objects.get(action="processing.saved_query.run")
    assert sorted(event.detail["job_ids"]) == sorted(j.pk for j in run.jobs)


def test_a_matched_study_with_nothing_for_the_type_is_skipped_and_the_others_run(principal_a, inst_a, archive, store_in, license_a):
    [xray] = store_in(inst_a, [to_bytes(make_dataset("CR", patient_name="Doe^Xray", study_description="CHEST CR"))])
    saved = save(principal_a, "doe", PatientName="DOE*")
    run = saved_queries.run_saved_query(principal=principal_a, saved_query=saved, processor_id="mip", parameters={}, queue=False)
    assert len(run.jobs) == 2
    assert [uid for uid, _ in run.skipped] == [xray.study.study_instance_uid]


def test_a_query_matching_nothing_is_a_clear_error_and_creates_no_job(principal_a, archive, license_a):
    saved = save(principal_a, "nobody", PatientName="NOBODY*")
    with pytest.raises(ValidationError, match="'nobody' matches none of your institution's studies"):
        saved_queries.run_saved_query(principal=principal_a, saved_query=saved, processor_id="mip", parameters={}, queue=False)
    assert ProcessingJob.objects.count() == 0


def test_a_quota_too_small_for_every_matched_study_refuses_the_whole_run(principal_a, archive, license_a):
    license_a("mip", usage_quota=1)
    saved = save(principal_a, "doe", PatientName="DOE*")
    with pytest.raises(LicenceRefused, match="matches 2 studies, one use each, .* has 1 use"):
        saved_queries.run_saved_query(principal=principal_a, saved_query=saved, processor_id="mip", parameters={}, queue=False)
    assert ProcessingJob.objects.count() == 0


def test_another_institutions_saved_query_cannot_be_run(principal_a, principal_b, archive, license_a):
    theirs = save(principal_b, "theirs", PatientName="DOE*")
    with pytest.raises(NotVisible):
        saved_queries.run_saved_query(principal=principal_a, saved_query=theirs, processor_id="mip", parameters={}, queue=False)
    with pytest.raises(NotVisible):
        saved_queries.get_saved_query(principal_a, theirs.pk)
    assert ProcessingJob.objects.count() == 0


# --- REST API ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def api_a(client, admin_a, principal_a):
    token = services.issue_token(actor=principal_a, membership=admin_a, name="script")[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def api_b(admin_b, principal_b):
    token = services.issue_token(actor=principal_b, membership=admin_b, name="script")[1]
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def api_post(client, url, **body):
    return client.post(url, body, content_type="application/json")


def test_api_saves_lists_and_runs_a_saved_query(api_a, api_b, archive, license_a):
    response = api_post(api_a, "/api/v1/processing/saved-queries", name="doe ct", match={"PatientName": "DOE*", "Modality": "CT"})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["match"] == {"PatientName": "DOE*", "ModalitiesInStudy": "CT"}
    assert [q["name"] for q in api_a.get("/api/v1/processing/saved-queries").json()["saved_queries"]] == ["doe ct"]
    assert api_b.get("/api/v1/processing/saved-queries").json()["saved_queries"] == []
    again = api_post(api_a, "/api/v1/processing/saved-queries", name="doe ct", match={"PatientName": "X*"})
    assert again.status_code == 400 and again.json()["parameter"] == "name"
    ran = api_post(api_a, created["run_url"], type="mip", parameters={"slab_thickness_mm": 5})
    assert ran.status_code == 201, ran.content
    body = ran.json()
    assert {j["study_instance_uid"] for j in body["jobs"]} == uids(archive["john"], archive["jane"])
    assert {j["parameters"]["slab_thickness_mm"] for j in body["jobs"]} == {5}
    assert ProcessingJob.objects.filter(origin="api").count() == 2


def test_api_another_institutions_saved_query_is_404(api_a, api_b, principal_a, archive, license_a):
    ours = save(principal_a, "ours", PatientName="DOE*")
    response = api_post(api_b, f"/api/v1/processing/saved-queries/{ours.pk}/run", type="mip")
    assert response.status_code == 404
    assert ProcessingJob.objects.count() == 0


def test_api_an_unlicensed_type_is_403_with_the_reason(api_b, principal_b, inst_b, store_in):
    ct_study(store_in, inst_b, patient_name="Doe^Beta", description="CHEST CT", days_ago=1)
    builtin_software("mip")
    saved = save(principal_b, "beta doe", PatientName="DOE*")
    response = api_post(api_b, f"/api/v1/processing/saved-queries/{saved.pk}/run", type="mip")
    assert response.status_code == 403
    assert response.json()["code"] == "unlicensed"
    assert ProcessingJob.objects.count() == 0


def test_api_parameters_outside_the_schema_are_400_naming_the_parameter(api_a, principal_a, archive, license_a):
    saved = save(principal_a, "doe", PatientName="DOE*")
    response = api_post(api_a, f"/api/v1/processing/saved-queries/{saved.pk}/run", type="mip", parameters={"slab_thickness_mm": -1})
    assert response.status_code == 400
    assert response.json()["parameter"] == "slab_thickness_mm"
    response = api_post(api_a, f"/api/v1/processing/saved-queries/{saved.pk}/run", type="mip", parameters={"colour": "red"})
    assert response.status_code == 400 and response.json()["parameter"] == "colour"
    assert ProcessingJob.objects.count() == 0


def test_service_bad_parameters_raise_before_any_job(principal_a, archive, license_a):
    saved = save(principal_a, "doe", PatientName="DOE*")
    with pytest.raises(InvalidParameters):
        saved_queries.run_saved_query(principal=principal_a, saved_query=saved, processor_id="mip", parameters={"x": 1}, queue=False)
    assert ProcessingJob.objects.count() == 0


# --- The process command ----------------------------------------------------------------------------------------------


def test_process_command_runs_a_saved_query_inline_one_job_per_study(capsys, principal_a, archive, license_a):
    save(principal_a, "doe ct", PatientName="DOE*", Modality="CT")
    call_command("process", "--institution", "alpha", "--type", "mip", "--saved-query", "doe ct", "--inline")
    out = capsys.readouterr().out.splitlines()
    found = list(ProcessingJob.objects.order_by("pk"))
    assert {j.study.study_instance_uid for j in found} == uids(archive["john"], archive["jane"])
    assert all(j.status == ProcessingJob.Status.SUCCEEDED and j.origin == "command" for j in found)
    assert out[:2] == [f"job {j.pk}: Maximum intensity projection 1.0, study {j.study.study_instance_uid}, 1 item(s)" for j in found]
    assert set(out[2:]) == {j.products.get().series_instance_uid for j in found}


def test_process_command_refuses_an_unknown_saved_query_and_uids_with_it(archive, license_a, principal_a):
    with pytest.raises(CommandError, match="alpha has no saved query named 'nope'"):
        call_command("process", "--institution", "alpha", "--type", "mip", "--saved-query", "nope", "--inline")
    save(principal_a, "doe", PatientName="DOE*")
    with pytest.raises(CommandError, match="either --saved-query or UIDs"):
        call_command("process", "--institution", "alpha", "--type", "mip", "--saved-query", "doe", archive["john"].study_instance_uid)
    assert ProcessingJob.objects.count() == 0


# --- The portal page --------------------------------------------------------------------------------------------------


def test_portal_page_saves_a_query_and_runs_it(client, admin_a, archive, license_a):
    login(client, admin_a.user)
    page = client.get("/processing/saved-queries/")
    assert page.status_code == 200
    response = client.post(
        "/processing/saved-queries/", {"name": "Doe chest", "patient_name": "doe*", "modality": "CT", "max_age_days": "30"}
    )
    assert response.status_code == 302
    saved = SavedQuery.objects.get()
    assert (saved.match, saved.max_age_days) == ({"PatientName": "doe*", "ModalitiesInStudy": "CT"}, 30)
    assert "Doe chest" in client.get("/processing/saved-queries/").content.decode()
    ran = client.post(f"/processing/saved-queries/{saved.pk}/run/", {"type": "mip", "parameters": "slab_thickness_mm=5"})
    assert ran.status_code == 302 and ran["Location"] == "/processing/jobs/"
    [job] = ProcessingJob.objects.all()  # only John's study is at most 30 days old
    assert job.study_id == archive["john"].pk and job.parameters["slab_thickness_mm"] == 5


def test_portal_page_shows_a_bad_parameter_and_a_refusal(client, admin_a, principal_a, archive, license_a):
    login(client, admin_a.user)
    saved = save(principal_a, "doe", PatientName="DOE*")
    bad = client.post(f"/processing/saved-queries/{saved.pk}/run/", {"type": "mip", "parameters": "slab_thickness_mm=-3"})
    assert bad.status_code == 400 and "slab_thickness_mm" in bad.content.decode()
    license_a("mip", usage_quota=1)
    refused = client.post(f"/processing/saved-queries/{saved.pk}/run/", {"type": "mip"})
    assert refused.status_code == 403 and "has 1 use(s) left" in refused.content.decode()
    assert ProcessingJob.objects.count() == 0


def test_portal_another_institutions_saved_query_is_404(client, admin_b, principal_a, archive, license_a):
    ours = save(principal_a, "ours", PatientName="DOE*")
    login(client, admin_b.user)
    assert client.post(f"/processing/saved-queries/{ours.pk}/run/", {"type": "mip"}).status_code == 404
    assert "ours" not in client.get("/processing/saved-queries/").content.decode()


def test_portal_page_reads_a_fixed_number_of_queries_however_many_saved_queries(
    client, admin_a, principal_a, license_a, django_assert_max_num_queries
):
    services.register_ae(
        actor=principal_a, institution=admin_a.institution, ae_title="ALPHARCV", host="192.0.2.5", port=104, can_receive=True
    )
    login(client, admin_a.user)
    save(principal_a, "first", PatientName="A*")
    client.get("/processing/saved-queries/")  # warm the session and the plugin registry
    with django_assert_max_num_queries(12) as one:
        client.get("/processing/saved-queries/")
    for n in range(6):
        save(principal_a, f"more {n}", PatientName=f"B{n}*")
    with django_assert_max_num_queries(len(one.captured_queries)) as many:
        page = client.get("/processing/saved-queries/")
    assert page.content.decode().count('name="type"') == 7 and "ALPHARCV" in page.content.decode()
    assert len(many.captured_queries) == len(one.captured_queries)
