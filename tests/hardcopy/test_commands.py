"""print_film and register_printer, as an operator's runbook uses them."""

import pytest
from django.core.management import CommandError, call_command

from hardcopy.models import PrintDevice, PrintJob
from subscribers.access import principal_for_token
from tests.hardcopy.conftest import pdf_page_size_pt, pdf_text
from tests.hardcopy.test_dicom_print import dcmprscp  # noqa: F401 (fixture)


def _call(*args):
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_register_printer_prints_the_credential_alone_on_the_last_line(inst_a, tmp_path):
    out = _call("register_printer", "--institution", "alpha", "--name", "Film room", "--hot-folder", str(tmp_path))
    token = out.strip().splitlines()[-1]
    principal = principal_for_token(token)
    assert principal.kind == "device" and principal.device.name == "Film room" and principal.institution == inst_a
    assert PrintDevice.objects.get().hot_folder == str(tmp_path)
    out = _call("register_printer", "--institution", "alpha", "--name", "Dry", "--dicom", "DRYVIEW@10.0.0.4:104")
    printer = PrintDevice.objects.get(device__name="Dry")
    assert (printer.ae_title, printer.host, printer.port) == ("DRYVIEW", "10.0.0.4", 104)


def test_register_printer_refuses_bad_input_and_saves_nothing(inst_a):
    with pytest.raises(CommandError, match="not AET@HOST:PORT"):
        _call("register_printer", "--institution", "alpha", "--name", "X", "--dicom", "nohost")
    with pytest.raises(CommandError, match="no institution with slug 'nowhere'"):
        _call("register_printer", "--institution", "nowhere", "--name", "X", "--cups", "Q")
    assert PrintDevice.objects.count() == 0


def test_print_film_writes_the_pdf_of_a_series(ct_series, tmp_path):
    out_file = tmp_path / "sheet.pdf"
    series_uid = ct_series[0].series.series_instance_uid
    out = _call("print_film", "--institution", "alpha", "--layout", "4x3", "--window", "40,400", "--out", str(out_file), series_uid)
    job = PrintJob.objects.get()
    assert f"print job {job.pk}" in out and job.state == "printed" and len(job.tiles) == 10
    assert pdf_page_size_pt(out_file) == pytest.approx((1008, 1224), abs=0.5)
    assert pdf_text(out_file).count("FILM-01") == 10


def test_print_film_refuses_other_institutions_uids_too_many_images_and_unknown_film(ct_series, inst_b, tmp_path):
    study_uid = ct_series[0].study.study_instance_uid
    out_file = tmp_path / "x.pdf"
    with pytest.raises(CommandError, match="no such study, series or image in beta"):
        _call("print_film", "--institution", "beta", "--layout", "4x3", "--out", str(out_file), study_uid)
    with pytest.raises(CommandError, match="10 images do not fit a 2x2 sheet of 4 tiles"):
        _call("print_film", "--institution", "alpha", "--layout", "2x2", "--out", str(out_file), study_uid)
    with pytest.raises(CommandError, match="Unknown film size '15INX17IN'"):
        _call("print_film", "--institution", "alpha", "--layout", "4x3", "--film", "15INX17IN", "--out", str(out_file), study_uid)
    with pytest.raises(CommandError, match="Layout 9x9 is not printable"):
        _call("print_film", "--institution", "alpha", "--layout", "9x9", "--out", str(out_file), study_uid)
    assert PrintJob.objects.count() == 0 and not out_file.exists()


def test_print_film_on_a_dicom_printer_waits_and_reports_failure(dcmprscp, ct_series, tmp_path):  # noqa: F811
    port = dcmprscp["port"]
    _call("register_printer", "--institution", "alpha", "--name", "Dry", "--dicom", f"IHEFULL@127.0.0.1:{port}")
    study_uid = ct_series[0].study.study_instance_uid
    out = _call("print_film", "--institution", "alpha", "--layout", "4x3", "--device", "Dry", study_uid)
    assert "printed on IHEFULL@127.0.0.1" in out
    assert len(list(dcmprscp["database"].glob("HG_*.dcm"))) == 10
    with pytest.raises(CommandError, match=r"failed: N-CREATE film box STANDARD\\4,3 on 14INX17IN: the printer refused with DICOM status"):
        _call("print_film", "--institution", "alpha", "--layout", "3x4", "--device", "Dry", study_uid)
    assert list(PrintJob.objects.order_by("pk").values_list("state", flat=True)) == ["printed", "failed"]
