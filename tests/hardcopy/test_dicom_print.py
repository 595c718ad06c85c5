"""Printing to a real DICOM Print SCP: dcmtk's dcmprscp stores the film box (SP_*.dcm) and each image box (HG_*.dcm)."""

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import BasicGrayscalePrintManagementMeta

from hardcopy import dicom_print, services
from hardcopy.models import PrintJob
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.hardcopy.conftest import windowed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dcmprscp(tmp_path):
    """dcmprscp with printer IHEFULL on a free port, run from a folder holding database/, spool/, log/, lut/, reports/."""
    if shutil.which("dcmprscp") is None:
        pytest.fail("dcmtk's dcmprscp is required (bin/test installs dcmtk)")
    root = tmp_path / "printscp"
    for folder in ("database", "spool", "log", "lut", "reports"):
        (root / folder).mkdir(parents=True)
    port = _free_port()
    config = Path("/etc/dcmtk/dcmpstat.cfg").read_text()
    head, _, rest = config.partition("[IHEFULL]")
    rest = re.sub(r"^Port = 10005$", f"Port = {port}", rest, count=1, flags=re.M)
    (root / "dcmpstat.cfg").write_text(head + "[IHEFULL]" + rest)
    process = subprocess.Popen(
        ["dcmprscp", "-c", "dcmpstat.cfg", "-p", "IHEFULL"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"port": port, "database": root / "database"}
    process.terminate()
    process.wait(timeout=10)


def _printer(institution, port, **accepts):
    printer, _ = services.register_printer(
        actor=OPERATOR,
        institution=institution,
        name="dry-laser",
        output="dicom",
        ae_title="IHEFULL",
        host="127.0.0.1",
        port=port,
        **accepts,
    )
    return printer


def _job(principal, instances, printer, **fmt):
    fmt = services.format_dict(**{"film_size": "14INX17IN", "window_center": 40, "window_width": 400, **fmt})
    return services.create_print_job(actor=principal, fmt=fmt, uids=[i.sop_instance_uid for i in instances], printer=printer)


def test_job_prints_on_dcmprscp_with_its_layout_film_size_and_windowed_pixels(dcmprscp, principal_a, ct_series):
    printer = _printer(principal_a.institution, dcmprscp["port"])
    job = _job(principal_a, ct_series, printer, rows=4, columns=3)
    job = dicom_print.print_job(job_id=job.pk)
    assert job.state == PrintJob.State.PRINTED, job.reason
    stored = [dcmread(p) for p in sorted(dcmprscp["database"].glob("SP_*.dcm"))]
    assert len(stored) == 1
    film_box = stored[0].FilmBoxContentSequence[0]
    assert film_box.ImageDisplayFormat == "STANDARD\\3,4" and film_box.FilmSizeID == "14INX17IN"
    hardcopies = [dcmread(p) for p in sorted(dcmprscp["database"].glob("HG_*.dcm"))]
    assert len(hardcopies) == 10
    # Each image box holds a source frame after the VOI, pixel for pixel (±1 for rounding), in tile order.
    by_pixels = [h.pixel_array.astype(float) for h in hardcopies]
    for instance in ct_series:
        expected = windowed(instance, 40, 400)
        assert any(p.shape == expected.shape and np.abs(p - expected).max() <= 1 for p in by_pixels), instance.instance_number
    assert all(h.BitsStored == 8 and h.PhotometricInterpretation == "MONOCHROME2" for h in hardcopies)
    assert job.printer_status["printer_status"] == "NORMAL"
    assert [e.state for e in job.events.all()] == ["queued", "printing", "printed"]
    assert AuditEvent.objects.filter(action="print.job.printed", object_id=str(job.pk)).count() == 1


def test_layout_the_printer_refuses_fails_the_job_with_its_dicom_status(dcmprscp, principal_a, ct_series):
    printer = _printer(principal_a.institution, dcmprscp["port"])
    job = _job(principal_a, ct_series, printer, rows=3, columns=4)  # STANDARD\4,3 is not among IHEFULL's formats
    job = dicom_print.print_job(job_id=job.pk)
    assert job.state == PrintJob.State.FAILED
    assert "N-CREATE film box STANDARD\\4,3 on 14INX17IN: the printer refused with DICOM status 0x" in job.reason
    assert list(dcmprscp["database"].glob("SP_*.dcm")) == []
    assert AuditEvent.objects.filter(action="print.job.printed").count() == 0
    assert AuditEvent.objects.filter(action="print.job.failed", object_id=str(job.pk)).count() == 1


def test_printer_declared_film_sizes_refuse_others_before_sending(principal_a, ct_series):
    from django.core.exceptions import ValidationError

    printer = _printer(principal_a.institution, 10005, film_sizes=["8INX10IN", "14INX17IN"])
    with pytest.raises(ValidationError, match="does not take film size A3"):
        _job(principal_a, ct_series[:1], printer, film_size="A3", rows=1, columns=1)
    assert PrintJob.objects.count() == 0


@pytest.fixture
def dropping_printer():
    """A Print SCP that creates the session and film box, then drops the association at the first image box."""
    ae = AE(ae_title="DROPPER")
    ae.add_supported_context(BasicGrayscalePrintManagementMeta)

    def on_create(event):
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence
        from pydicom.uid import generate_uid

        attrs = Dataset()
        if "ImageDisplayFormat" in event.attribute_list:
            items = []
            for _ in range(12):
                item = Dataset()
                item.ReferencedSOPClassUID = "1.2.840.10008.5.1.1.4"
                item.ReferencedSOPInstanceUID = generate_uid()
                items.append(item)
            attrs.ReferencedImageBoxSequence = Sequence(items)
        return 0x0000, attrs

    def on_set(event):
        event.assoc.abort()
        return 0x0000, None

    def on_get(event):
        from pydicom.dataset import Dataset

        attrs = Dataset()
        attrs.PrinterStatus = "NORMAL"
        attrs.PrinterStatusInfo = "NORMAL"
        return 0x0000, attrs

    port = _free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set), (evt.EVT_N_GET, on_get)]
    )
    yield port
    server.shutdown()


def test_printer_dropping_the_association_mid_job_fails_it_with_the_reason(dropping_printer, principal_a, ct_series):
    printer = _printer(principal_a.institution, dropping_printer)
    job = _job(principal_a, ct_series[:4], printer, rows=2, columns=2)
    job = dicom_print.print_job(job_id=job.pk)
    assert job.state == PrintJob.State.FAILED
    assert job.reason.startswith("N-SET image box 1: the printer did not answer")
    assert AuditEvent.objects.filter(action="print.job.printed").count() == 0


def test_unreachable_printer_fails_the_job_and_retry_queues_it_again(principal_a, ct_series):
    printer = _printer(principal_a.institution, _free_port())
    job = _job(principal_a, ct_series[:1], printer, rows=1, columns=1)
    job = dicom_print.print_job(job_id=job.pk)
    assert job.state == PrintJob.State.FAILED and "Cannot open an association" in job.reason
    services.retry_job(actor=principal_a, job=job)
    job.refresh_from_db()
    assert job.state == PrintJob.State.QUEUED
