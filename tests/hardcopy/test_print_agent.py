"""The print agent against a running server: it fetches its job's images by identifier over HTTP, composes the sheet
into a hot folder and reports back; a device reads nothing but the images of its own open jobs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from hardcopy import services
from hardcopy.models import PrintJob
from images.ingest import ingest_instance
from subscribers import services as subscriber_services
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.dicom_files import synth_bytes
from tests.hardcopy.conftest import pdf_image_arrays, pdf_page_size_pt, pdf_text


def _printer(institution, tmp_path, name="film-room"):
    return services.register_printer(
        actor=OPERATOR, institution=institution, name=name, output="hot_folder", hot_folder=str(tmp_path / "hot")
    )


def _job(principal, instances, printer, **fmt):
    fmt = services.format_dict(**{"rows": 3, "columns": 4, "film_size": "14INX17IN", "window_center": 40, "window_width": 400, **fmt})
    return services.create_print_job(actor=principal, fmt=fmt, uids=[i.sop_instance_uid for i in instances], printer=printer)


def _run_agent(server, token, hot_folder):
    """manage.py print_agent --once in its own process, with no database at all: the agent speaks HTTP only."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": "sqlite:////nonexistent/agent-has-no-db.sqlite3"}
    return subprocess.run(
        [sys.executable, "manage.py", "print_agent", "--server", server, "--token", token, "--hot-folder", str(hot_folder), "--once"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _device_client(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_print_agent_prints_a_queued_job_into_its_hot_folder(live_server, principal_a, ct_series, tmp_path):
    printer, token = _printer(principal_a.institution, tmp_path)
    job = _job(principal_a, ct_series, printer)
    done = _run_agent(live_server.url, token, tmp_path / "hot")
    assert done.returncode == 0, done.stderr
    assert f"job {job.pk}: printed" in done.stdout
    pdf = tmp_path / "hot" / f"print-job-{job.pk}.pdf"
    assert sorted(p.name for p in (tmp_path / "hot").iterdir()) == [pdf.name]
    assert pdf_page_size_pt(pdf) == pytest.approx((14 * 72, 17 * 72), abs=0.5)
    text = pdf_text(pdf)
    assert text.count("Filmer, Fiona") == 10 and "kernel B30f" in text
    job.refresh_from_db()
    assert job.state == PrintJob.State.PRINTED
    assert [e.state for e in job.events.all()] == ["queued", "fetched", "printing", "printed"]
    fetched = AuditEvent.objects.filter(action="print.image.fetch", principal_kind="device")
    assert sorted(fetched.values_list("object_id", flat=True)) == sorted(i.sop_instance_uid for i in ct_series)
    assert AuditEvent.objects.filter(action="print.job.printed", object_id=str(job.pk)).count() == 1
    # Nothing left open: a second round prints nothing.
    again = _run_agent(live_server.url, token, tmp_path / "hot")
    assert again.returncode == 0 and again.stdout == ""


def test_agent_sheet_is_the_same_as_the_servers_pdf_of_the_job(live_server, principal_a, ct_series, tmp_path):
    """The agent places the images the server rendered at print size as they are: same pixels, same text, ruler too."""
    printer, token = _printer(principal_a.institution, tmp_path)
    job = _job(principal_a, ct_series[:4], printer, rows=2, columns=2)
    done = _run_agent(live_server.url, token, tmp_path / "hot")
    assert done.returncode == 0, done.stderr
    agent_pdf = tmp_path / "hot" / f"print-job-{job.pk}.pdf"
    server_pdf = tmp_path / "server.pdf"
    server_pdf.write_bytes(services.render_pdf(actor=principal_a, job=job))
    assert pdf_text(agent_pdf) == pdf_text(server_pdf)
    # The ruler measures the patient, not the pixels: 128 columns x 0.7 mm = 89.6 mm across, 40 % of it holds 2 cm.
    assert pdf_text(agent_pdf).count("2 cm") == 4
    agent_images, server_images = pdf_image_arrays(agent_pdf, tmp_path), pdf_image_arrays(server_pdf, tmp_path)
    assert len(agent_images) == len(server_images) == 4
    for ours, theirs in zip(agent_images, server_images, strict=True):
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_revoked_credential_prints_nothing_and_the_job_stays_queued(live_server, principal_a, ct_series, tmp_path):
    printer, token = _printer(principal_a.institution, tmp_path)
    job = _job(principal_a, ct_series[:2], printer)
    subscriber_services.revoke_token(actor=OPERATOR, token=printer.device.tokens.get())
    done = _run_agent(live_server.url, token, tmp_path / "hot")
    assert done.returncode != 0 and "revoked" in done.stderr
    assert not (tmp_path / "hot").exists() or not any((tmp_path / "hot").iterdir())
    job.refresh_from_db()
    assert job.state == PrintJob.State.QUEUED
    # Authentication fails before any hard-copy rule is asked: 401, as on every API, for the job list and its images.
    client = _device_client(token)
    assert client.get("/api/v1/print/jobs").status_code == 401
    refused = client.get(_tile_url(job, ct_series[0]))
    assert refused.status_code == 401 and refused.json()["code"] == "token_revoked"


def _tile_url(job, instance, frame=1):
    return f"/api/v1/print/jobs/{job.pk}/instances/{instance.sop_instance_uid}/frames/{frame}/rendered"


def test_device_reads_only_images_of_its_own_open_jobs(principal_a, principal_b, ct_series, tmp_path):
    printer, token = _printer(principal_a.institution, tmp_path)
    job = _job(principal_a, ct_series[:2], printer)
    client = _device_client(token)
    assert client.get(_tile_url(job, ct_series[0])).status_code == 200
    # An image of the same institution not named in the job, a frame that is not the job's.
    assert client.get(_tile_url(job, ct_series[5])).status_code == 404
    assert client.get(_tile_url(job, ct_series[0], frame=2)).status_code == 404
    # Another institution's image, its job and its printer's jobs.
    other = ingest_instance(principal=principal_b, data=synth_bytes("CT", rows=32, cols=32), source="test").instance
    printer_b, token_b = _printer(principal_b.institution, tmp_path, name="beta-printer")
    job_b = _job(principal_b, [other], printer_b)
    assert client.get(_tile_url(job_b, other)).status_code == 404
    assert client.get(_tile_url(job, other)).status_code == 404
    assert client.get(f"/api/v1/print/jobs/{job_b.pk}").status_code == 404
    assert _device_client(token_b).get(_tile_url(job, ct_series[0])).status_code == 404
    assert [j["id"] for j in client.get("/api/v1/print/jobs").json()["jobs"]] == [job.pk]
    # Another printer of the same institution does not see this printer's job.
    _, token_2 = _printer(principal_a.institution, tmp_path, name="second-printer")
    assert _device_client(token_2).get(_tile_url(job, ct_series[0])).status_code == 404
    # Once the job is closed its images are gone for the device too.
    services.cancel_job(actor=principal_a, job=job)
    assert client.get(_tile_url(job, ct_series[0])).status_code == 404
    assert client.get("/api/v1/print/jobs").json()["jobs"] == []
    # A person's token gets nothing from the devices' API.
    _, user_token = subscriber_services.issue_token(actor=principal_a, membership=principal_a.membership, name="script")
    assert _device_client(user_token).get("/api/v1/print/jobs").status_code == 404
    fetched = AuditEvent.objects.filter(action="print.image.fetch")
    assert fetched.count() == 1


def test_device_cannot_report_a_job_backwards_or_close_another_devices_job(principal_a, ct_series, tmp_path):
    printer, token = _printer(principal_a.institution, tmp_path)
    job = _job(principal_a, ct_series[:1], printer)
    client = _device_client(token)
    assert client.post(f"/api/v1/print/jobs/{job.pk}/state", {"state": "printed"}, format="json").status_code == 409
    assert client.post(f"/api/v1/print/jobs/{job.pk}/state", {"state": "failed"}, format="json").status_code == 409
    _, token_2 = _printer(principal_a.institution, tmp_path, name="second-printer")
    assert _device_client(token_2).post(f"/api/v1/print/jobs/{job.pk}/state", {"state": "fetched"}, format="json").status_code == 404
    job.refresh_from_db()
    assert job.state == PrintJob.State.QUEUED and job.events.count() == 1


def test_offline_printer_leaves_job_queued_and_it_can_be_cancelled_and_retried(principal_a, ct_series, tmp_path):
    printer, _ = _printer(principal_a.institution, tmp_path)
    job = _job(principal_a, ct_series[:3], printer)
    assert PrintJob.objects.get(pk=job.pk).state == "queued"
    services.cancel_job(actor=principal_a, job=job)
    services.retry_job(actor=principal_a, job=job)
    job.refresh_from_db()
    assert job.state == "queued" and job.attempts == 1
    assert list(AuditEvent.objects.filter(action__startswith="print.job").values_list("action", flat=True).order_by("id")) == [
        "print.job.create",
        "print.job.cancel",
        "print.job.retry",
    ]


def test_bad_job_requests_are_refused_with_nothing_saved(principal_a, principal_b, ct_series, tmp_path):
    from django.core.exceptions import ValidationError

    from subscribers.access import NotVisible

    printer_b, _ = _printer(principal_b.institution, tmp_path, name="beta-printer")
    printer_a, _ = _printer(principal_a.institution, tmp_path)
    with pytest.raises(ValidationError, match="10 images do not fit a 2x2 sheet"):
        _job(principal_a, ct_series, printer_a, rows=2, columns=2)
    with pytest.raises(ValidationError, match="Unknown film size '15INX17IN'"):
        _job(principal_a, ct_series[:1], printer_a, film_size="15INX17IN")
    with pytest.raises(ValidationError, match="Layout 7x7 is not printable"):
        _job(principal_a, ct_series[:1], printer_a, rows=7, columns=7)
    with pytest.raises(NotVisible):
        _job(principal_a, ct_series[:1], printer_b)
    with pytest.raises(NotVisible):
        _job(principal_b, ct_series[:1], printer_b)
    assert PrintJob.objects.count() == 0
    assert not Path(tmp_path / "hot").exists()
