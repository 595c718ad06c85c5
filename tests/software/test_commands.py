"""`manage.py process`: prints the job id, waits, prints the product series UIDs, exits non-zero on failure."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from images.models import Series
from software.models import ProcessingJob


def test_process_inline_prints_the_job_and_the_product_series(capsys, ct_series, license_a):
    call_command(
        "process",
        "--institution",
        "alpha",
        "--type",
        "mpr",
        "--param",
        "planes=coronal",
        "--param",
        "step=8",
        "--inline",
        ct_series[0].series.series_instance_uid,
    )
    out = capsys.readouterr().out.splitlines()
    job = ProcessingJob.objects.get()
    assert out[0] == f"job {job.pk}: Multiplanar reformat 1.0, 1 item(s)"
    assert out[1:] == [job.products.first().series_instance_uid]
    assert Series.objects.get(series_instance_uid=out[1]).number_of_instances == 4  # 32 rows, every 8th
    assert job.parameters == {"planes": ["coronal"], "step": 8}
    assert job.origin == "command"


def test_process_exits_non_zero_when_refused_or_given_a_bad_parameter(ct_series, license_a, inst_b):
    with pytest.raises(CommandError, match="Parameter 'step'"):
        call_command(
            "process", "--institution", "alpha", "--type", "mpr", "--param", "step=0", "--inline", ct_series[0].study.study_instance_uid
        )
    with pytest.raises(CommandError, match="refused: Your institution has no licence"):
        call_command("process", "--institution", "beta", "--type", "mip", "--inline", ct_series[0].study.study_instance_uid)
    assert ProcessingJob.objects.count() == 0


def test_process_exits_non_zero_when_the_job_fails(ct_series, license_a, inst_a, store_in):
    from tests.software.volumes import as_bytes, volume

    gap = volume("CT", slices=5, study_uid=ct_series[0].study.study_instance_uid)
    del gap[2]
    [first, *_] = store_in(inst_a, as_bytes(gap))
    with pytest.raises(CommandError, match="failed: 1 of 1 items failed; the first: The slices of the series are not evenly spaced"):
        call_command("process", "--institution", "alpha", "--type", "mpr", "--inline", first.series.series_instance_uid)


def test_process_list_shows_types_and_whether_the_institution_is_licensed(capsys, license_a):
    call_command("process", "--list", "--institution", "alpha")
    out = capsys.readouterr().out
    assert "mip" in out and "Maximum intensity projection  licensed" in out
    assert "deidentify" in out
