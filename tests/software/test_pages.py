"""Portal pages: the Process page of a study, the job pages, and who may see them."""

from __future__ import annotations

from django.urls import reverse

from software.models import ProcessingJob
from software.services import runner
from tests.conftest import login


def test_process_page_runs_a_job_and_the_job_page_reports_type_version_and_parameters(client, admin_a, ct_series, license_a):
    study_uid = ct_series[0].study.study_instance_uid
    login(client, admin_a.user)
    url = reverse("software-process-study", kwargs={"study_uid": study_uid})
    assert url == f"/studies/{study_uid}/process/"
    page = client.get(url, {"type": "mip"})
    assert page.status_code == 200 and "Slab thickness (mm)" in page.content.decode()
    response = client.post(url, {"type": "mip", "param_slab_thickness_mm": "10", "what": "study", "delivery": "pull"})
    job = ProcessingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("processing-job", kwargs={"job_id": job.pk})
    assert job.parameters == {"slab_thickness_mm": 10.0} and job.origin == "portal"
    runner.run_job(job.pk)
    detail = client.get(response["Location"]).content.decode()
    assert "Maximum intensity projection (<code>mip</code>, version 1.0)" in detail
    assert "slab_thickness_mm=10.0" in detail
    product_series = job.products.first().series_instance_uid
    assert reverse("series-download", kwargs={"study_uid": study_uid, "series_uid": product_series}) in detail
    assert f'data-testid="job-{job.pk}"' in client.get(reverse("processing-jobs")).content.decode()


def test_process_page_names_the_bad_parameter(client, admin_a, ct_series, license_a):
    login(client, admin_a.user)
    url = reverse("software-process-study", kwargs={"study_uid": ct_series[0].study.study_instance_uid})
    response = client.post(url, {"type": "mip", "param_slab_thickness_mm": "-1", "what": "study", "delivery": "pull"})
    assert response.status_code == 400
    assert "Parameter &#x27;slab_thickness_mm&#x27;" in response.content.decode()
    assert not ProcessingJob.objects.exists()


def test_process_page_shows_why_a_type_is_not_licensed(client, admin_a, ct_series, license_a):
    from software.models import Licence

    Licence.objects.filter(software__processor_id="mpr").delete()
    login(client, admin_a.user)
    page = client.get(reverse("software-process-study", kwargs={"study_uid": ct_series[0].study.study_instance_uid})).content.decode()
    assert 'data-testid="refusal-mpr"' in page and "no licence for Multiplanar reformat" in page


def test_other_institutions_and_users_without_the_role_get_404_or_403(client, admin_b, clinician_a, ct_series, license_a, principal_a):
    from software.services import jobs

    job = jobs.submit_job(
        principal=principal_a, processor_id="mip", parameters={}, uids=[ct_series[0].study.study_instance_uid], queue=False
    )
    process_url = reverse("software-process-study", kwargs={"study_uid": ct_series[0].study.study_instance_uid})
    login(client, admin_b.user)
    assert client.get(process_url).status_code == 404
    assert client.get(reverse("processing-job", kwargs={"job_id": job.pk})).status_code == 404
    assert client.post(reverse("processing-job-cancel", kwargs={"job_id": job.pk})).status_code == 404
    login(client, clinician_a.user)
    assert client.get(process_url).status_code == 403
    assert client.get(reverse("processing-job", kwargs={"job_id": job.pk})).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"


def test_the_study_page_offers_processing_to_software_members_of_the_owner(client, inst_a):
    from django.urls import reverse

    from images.ingest.bulk import operator_for
    from images.ingest.service import ingest_instance
    from images.models import Study
    from tests.conftest import login
    from tests.dicom_files import synth_bytes
    from tests.factories import member

    ingest_instance(principal=operator_for(inst_a), data=synth_bytes("CT"), source="import")
    study = Study.objects.get(institution=inst_a)
    page = reverse("study-detail", args=[study.study_instance_uid])
    process = reverse("software-process-study", args=[study.study_instance_uid])
    login(client, member(inst_a, "runner_a", ["receive", "software"]).user)
    assert f'href="{process}"' in client.get(page).content.decode()
    login(client, member(inst_a, "reader_a", ["receive"]).user)
    assert process not in client.get(page).content.decode()
