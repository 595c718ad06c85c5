"""manage.py add_poll_source (prints the source's id alone on the last line) and poll_sources (polls at once and prints
what each poll found, fetched and processed; exits 1 with the reason when a poll failed), against dcmtk's dcmqrscp."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from software.models import PollRun, PollSource
from tests.factories import ApplicationEntityFactory
from tests.software.dcmtk_peers import free_port, needs_dcmtk, start_pacs, stop
from tests.software.test_polling import dated
from tests.software.volumes import as_bytes, volume

pytestmark = pytest.mark.django_db


def run(*args, **options) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue().splitlines()


@pytest.fixture
def pacs(tmp_path):
    process, running = start_pacs(tmp_path)
    yield running
    stop(process)


def test_add_poll_source_prints_the_id_alone_on_the_last_line(inst_a, license_a):
    receiver = ApplicationEntityFactory(institution=inst_a, ae_title="WORKSTN", host="10.0.0.9", port=104, can_receive=True)

    lines = run(
        "add_poll_source",
        "--institution=alpha",
        "--dicom=RADPACS@10.0.0.5:11112",
        "--type=mip",
        "--param=slab_thickness_mm=10",
        "--match=Modality=CT",
        "--match=0008,1030=*CHEST*",
        "--every=15",
        "--max-age-days=7",
        "--push=WORKSTN",
    )

    source = PollSource.objects.get(pk=int(lines[-1]))
    assert lines[-1] == str(source.pk)
    assert (source.institution, source.kind, source.ae_title, source.host, source.port) == (inst_a, "dicom", "RADPACS", "10.0.0.5", 11112)
    assert source.query == {"ModalitiesInStudy": "CT", "StudyDescription": "*CHEST*"}
    assert source.parameters == {"slab_thickness_mm": 10}
    assert (source.every_minutes, source.max_age_days, source.delivery, source.push_ae) == (15, 7, "push", receiver)


def test_add_poll_source_reads_a_dicomweb_secret_from_the_environment_only(inst_a, license_a, monkeypatch):
    monkeypatch.setenv("MEDARCHIVE_POLL_SECRET", "s3cret")
    lines = run(
        "add_poll_source", "--institution=alpha", "--dicomweb=https://pacs.example.org/dicom-web", "--type=mip", "--username=poller"
    )
    source = PollSource.objects.get(pk=int(lines[-1]))
    assert (source.kind, source.url, source.username, source.secret) == (
        "dicomweb",
        "https://pacs.example.org/dicom-web",
        "poller",
        "s3cret",
    )
    assert "s3cret" not in "\n".join(lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--institution=nowhere", "--dicom=P@h:104", "--type=mip"], "no institution with slug 'nowhere'"),
        (["--institution=alpha", "--dicom=P@h", "--type=mip"], "is not AET@HOST:PORT"),
        (["--institution=alpha", "--dicom=P@h:104", "--type=nonesuch"], "There is no processing type 'nonesuch'"),
        (["--institution=alpha", "--dicom=P@h:104", "--type=mip", "--match=Colour=red"], "Cannot match on 'Colour'"),
        (["--institution=alpha", "--dicom=P@h:104", "--type=mip", "--param=slab_thickness_mm"], "NAME=VALUE"),
        (["--institution=alpha", "--dicom=P@h:104", "--type=mip", "--push=NOSUCH"], "not an active receiving AE title"),
    ],
)
def test_add_poll_source_refuses_bad_input_and_adds_nothing(inst_a, license_a, args, message):
    with pytest.raises(CommandError, match=message):
        run("add_poll_source", *args)
    assert not PollSource.objects.exists()


def test_add_poll_source_refuses_an_unlicensed_type(inst_b):
    from tests.software.conftest import builtin_software

    builtin_software("mip")
    with pytest.raises(CommandError, match="no licence"):
        run("add_poll_source", "--institution=beta", "--dicom=P@h:104", "--type=mip")
    assert not PollSource.objects.exists()


@needs_dcmtk
def test_poll_sources_polls_at_once_and_prints_found_fetched_processed(inst_a, license_a, pacs):
    pacs.add(as_bytes(dated(volume("CT", slices=3, patient_id="PAT-C1"), 1)))
    pacs.add(as_bytes(dated(volume("MR", slices=3, patient_id="PAT-C2"), 1)))
    source_id = run("add_poll_source", "--institution=alpha", f"--dicom={pacs.ae_title}@127.0.0.1:{pacs.port}", "--type=mip")[-1]

    first = run("poll_sources", "--now")
    second = run("poll_sources", f"--source={source_id}")

    assert first == [f"source {source_id} ({pacs.ae_title}@127.0.0.1:{pacs.port}): found 2, fetched 2, processed 2, failed 0"]
    assert second == [f"source {source_id} ({pacs.ae_title}@127.0.0.1:{pacs.port}): found 2, fetched 0, processed 0, failed 0"]
    assert run("poll_sources") == ["no polling source is due"]  # polled a moment ago, every 60 minutes


def test_poll_sources_exits_1_with_the_reason_of_a_failed_poll(inst_a, license_a):
    port = free_port()
    source_id = run("add_poll_source", "--institution=alpha", f"--dicom=GONE@127.0.0.1:{port}", "--type=mip", "--every=5")[-1]

    out = StringIO()
    with pytest.raises(CommandError, match="1 of 1 poll") as failed:
        call_command("poll_sources", stdout=out)
    assert failed.value.returncode == 1
    line = out.getvalue().strip()
    assert line.startswith(f"source {source_id} (GONE@127.0.0.1:{port}): found 0, fetched 0, processed 0, failed 0; the poll failed: ")
    assert f"PACS at 127.0.0.1:{port} could not be reached: Connection refused; next try " in line
    assert PollRun.objects.get().status == "failed"


def test_poll_sources_refuses_an_unknown_or_turned_off_source(inst_a, license_a):
    with pytest.raises(CommandError, match="no polling source with id 999"):
        run("poll_sources", "--source=999")
    source_id = run("add_poll_source", "--institution=alpha", "--dicom=P@h:104", "--type=mip")[-1]
    PollSource.objects.filter(pk=source_id).update(is_active=False)
    with pytest.raises(CommandError, match="is off"):
        run("poll_sources", f"--source={source_id}")
    assert not PollRun.objects.exists()
