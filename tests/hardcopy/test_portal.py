"""The portal's hard-copy pages: compose with a server-rendered preview, PDF download, job list with cancel and retry."""

import io

import pytest
from django.urls import reverse
from PIL import Image

from hardcopy import services
from hardcopy.models import FilmFormat, PrintJob
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.factories import member


@pytest.fixture
def printer_a(inst_a, tmp_path):
    printer, _ = services.register_printer(
        actor=OPERATOR, institution=inst_a, name="film-room", output="hot_folder", hot_folder=str(tmp_path)
    )
    return printer


def _compose_url(ct_series):
    return f"/hardcopy/compose/{ct_series[0].study.study_instance_uid}/"


def test_compose_page_previews_every_nth_image_and_downloads_the_pdf(client_a, ct_series):
    response = client_a.get(_compose_url(ct_series))
    assert response.status_code == 200 and b"CT 4x5 lung window" in response.content
    fmt = FilmFormat.objects.get(institution=ct_series[0].institution, name="CT 3x4 bone window")
    query = {"format": fmt.pk, "series": ct_series[0].series.series_instance_uid, "mode": "every", "every": 3}
    preview = client_a.get(_compose_url(ct_series) + "preview.png", query)
    assert preview.status_code == 200 and preview["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(preview.content))
    assert image.size == (14 * 30, 17 * 30)
    response = client_a.post(_compose_url(ct_series), {**query, "printer": "pdf"})
    job = PrintJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/hardcopy/jobs/{job.pk}/pdf"
    assert [t["sop_instance_uid"] for t in job.tiles] == [ct_series[i].sop_instance_uid for i in (0, 3, 6, 9)]
    pdf = client_a.get(response["Location"])
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    job.refresh_from_db()
    assert job.state == "printed"
    assert AuditEvent.objects.filter(action="print.pdf.download", object_id=str(job.pk)).count() == 1


def test_compose_sends_picked_images_to_a_printer_and_the_list_cancels_and_retries(client_a, ct_series, printer_a):
    client_a.get(_compose_url(ct_series))
    fmt = FilmFormat.objects.get(name="CT 4x5 soft tissue")
    picks = [f"{ct_series[i].sop_instance_uid}:1" for i in (1, 4)]
    response = client_a.post(
        _compose_url(ct_series), {"format": fmt.pk, "mode": "pick", "pick": picks, "printer": str(printer_a.pk)}, follow=True
    )
    job = PrintJob.objects.get()
    assert job.device == printer_a and [t["sop_instance_uid"] for t in job.tiles] == [
        ct_series[1].sop_instance_uid,
        ct_series[4].sop_instance_uid,
    ]
    assert job.format["window_center"] == 40 and b"Queued" in response.content
    assert client_a.post(f"/hardcopy/jobs/{job.pk}/cancel/").status_code == 302
    job.refresh_from_db()
    assert job.state == "cancelled"
    client_a.post(f"/hardcopy/jobs/{job.pk}/retry/")
    job.refresh_from_db()
    assert job.state == "queued"
    page = client_a.get(f"/hardcopy/jobs/{job.pk}/")
    assert b"Cancelled by admin_a" in page.content


def test_too_many_images_is_refused_with_nothing_saved(client_a, ct_series):
    client_a.get(_compose_url(ct_series))
    fmt = FilmFormat.objects.get(name="X-ray 1x1")
    response = client_a.post(_compose_url(ct_series), {"format": fmt.pk, "mode": "all", "printer": "pdf"})
    assert response.status_code == 400 and b"10 images do not fit a 1x1 sheet of 1 tiles" in response.content
    assert PrintJob.objects.count() == 0


def test_without_the_print_role_the_pages_are_403(client, inst_a, ct_series):
    clinician = member(inst_a, "no_print", ["receive"])
    login(client, clinician.user)
    assert client.get(_compose_url(ct_series)).status_code == 403
    assert client.get("/hardcopy/jobs/").status_code == 403


def test_other_institution_gets_404_for_study_jobs_and_printers(client_b, ct_series, principal_a, printer_a):
    job = services.create_print_job(actor=principal_a, fmt=services.format_dict(rows=4, columns=3), uids=[ct_series[0].sop_instance_uid])
    assert client_b.get(_compose_url(ct_series)).status_code == 404
    for url in (f"/hardcopy/jobs/{job.pk}/", f"/hardcopy/jobs/{job.pk}/pdf"):
        assert client_b.get(url).status_code == 404
    assert client_b.post(f"/hardcopy/jobs/{job.pk}/cancel/").status_code == 404
    assert b"film-room" not in client_b.get("/hardcopy/jobs/").content
    job.refresh_from_db()
    assert job.state == "queued"


def test_job_list_query_count_does_not_grow_with_jobs(client_a, ct_series, principal_a, printer_a, django_assert_max_num_queries):
    for _ in range(5):
        services.create_print_job(
            actor=principal_a, fmt=services.format_dict(rows=4, columns=3), uids=[ct_series[0].sop_instance_uid], printer=printer_a
        )
    client_a.get("/hardcopy/jobs/")
    with django_assert_max_num_queries(12):
        response = client_a.get("/hardcopy/jobs/")
    assert response.status_code == 200 and response.content.count(b"film-room") == 5


def test_the_study_page_offers_printing_to_print_members_of_the_owner_only(client, inst_a, inst_b):
    from images.ingest.bulk import operator_for
    from images.ingest.service import ingest_instance
    from images.models import Study
    from images.sharing.services import share
    from subscribers.access import Principal
    from subscribers.models import Role
    from tests.conftest import login
    from tests.dicom_files import synth_bytes
    from tests.factories import member

    ingest_instance(principal=operator_for(inst_a), data=synth_bytes("CT"), source="import")
    study = Study.objects.get(institution=inst_a)
    share(principal=Principal(kind="operator", institution=inst_a, roles=frozenset({Role.ADMIN})), study=study, with_institution=inst_b)
    url = reverse("study-detail", args=[study.study_instance_uid])
    compose = reverse("print-compose", args=[study.study_instance_uid])

    login(client, member(inst_a, "printing_a", ["receive", "print"]).user)
    assert f'href="{compose}"' in client.get(url).content.decode()
    login(client, member(inst_a, "reading_a", ["receive"]).user)
    assert compose not in client.get(url).content.decode()
    login(client, member(inst_b, "printing_b", ["receive", "print"]).user)
    assert compose not in client.get(url).content.decode()  # a shared study is not printed by the receiver
