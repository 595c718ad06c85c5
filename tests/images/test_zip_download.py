"""Zip downloads of a study or a series (images/zipdownload.py through the portal's download URLs): the stored files,
byte for byte, under safe names, streamed, only to who may see the study, and audited."""

import hashlib
import io
import tempfile
import tracemalloc
import zipfile
from pathlib import PurePosixPath

import pytest
from pydicom.uid import generate_uid

from images.ingest import IngestCache, ingest_instance
from images.models import Instance
from images.sharing.services import share
from images.zipdownload import member_name, safe_component
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.dicom_files import series, synth_bytes
from tests.factories import member


@pytest.fixture
def store(principal_a):
    def store(blobs, principal=principal_a):
        cache = IngestCache()
        return [ingest_instance(principal=principal, data=data, source="test", cache=cache).instance for data in blobs]

    return store


@pytest.fixture
def two_series_study(store):
    """A CT series of 3 and an MR series of 2 in one study."""
    study_uid = generate_uid()
    ct = store(series("CT", 3, study_uid=study_uid, series_number=1, patient_id="PAT-ZIP"))
    mr = store(series("MR", 2, study_uid=study_uid, series_number=2, patient_id="PAT-ZIP"))
    return ct[0].study, ct, mr


def _download(client, url) -> tuple[object, bytes]:
    response = client.get(url)
    assert response.status_code == 200, response
    assert response.streaming
    return response, b"".join(response.streaming_content)


def _study_url(study) -> str:
    return f"/studies/{study.study_instance_uid}/download.zip"


def _series_url(study, series_uid) -> str:
    return f"/studies/{study.study_instance_uid}/series/{series_uid}/download.zip"


def _members_by_sha(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {hashlib.sha256(archive.read(name)).hexdigest(): name for name in archive.namelist()}


def test_study_zip_holds_every_stored_file_byte_for_byte_under_patient_study_series_names(client, admin_a, two_series_study):
    study, ct, mr = two_series_study
    login(client, admin_a.user)
    response, data = _download(client, _study_url(study))
    assert response["Content-Type"] == "application/zip"
    assert int(response["Content-Length"]) == len(data)
    assert response["Content-Disposition"].startswith("attachment; filename=")
    assert study.study_instance_uid in response["Content-Disposition"]
    members = _members_by_sha(data)
    assert set(members) == {i.sha256 for i in ct + mr}
    for instance in ct + mr:
        expected = (
            f"PAT-ZIP/{study.study_instance_uid}/{instance.series.series_number}-{instance.series.series_instance_uid}/"
            f"{instance.sop_instance_uid}.dcm"
        )
        assert members[instance.sha256] == expected


def test_series_zip_holds_only_that_series(client, admin_a, two_series_study):
    study, ct, mr = two_series_study
    login(client, admin_a.user)
    response, data = _download(client, _series_url(study, mr[0].series.series_instance_uid))
    assert set(_members_by_sha(data)) == {i.sha256 for i in mr}
    assert "series-2" in response["Content-Disposition"]


def test_unknown_series_of_a_visible_study_is_not_found(client, admin_a, two_series_study):
    study, _, _ = two_series_study
    login(client, admin_a.user)
    assert client.get(_series_url(study, generate_uid())).status_code == 404


def test_another_institution_gets_404_for_study_and_series_zips_and_nothing_is_audited_as_a_download(client, admin_b, two_series_study):
    study, ct, _ = two_series_study
    login(client, admin_b.user)
    assert client.get(_study_url(study)).status_code == 404
    assert client.get(_series_url(study, ct[0].series.series_instance_uid)).status_code == 404
    assert not AuditEvent.objects.filter(action="study.download").exists()


def test_anonymous_caller_is_sent_to_log_in(client, two_series_study):
    study, _, _ = two_series_study
    response = client.get(_study_url(study))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_download_is_audited_with_who_what_and_how_much(client, admin_a, two_series_study):
    study, ct, mr = two_series_study
    login(client, admin_a.user)
    _download(client, _study_url(study))
    _download(client, _series_url(study, ct[0].series.series_instance_uid))
    events = list(AuditEvent.objects.filter(action="study.download").order_by("id"))
    assert [(e.actor, e.object_id, e.detail["level"], e.detail["count"]) for e in events] == [
        ("admin_a", study.study_instance_uid, "study", 5),
        ("admin_a", study.study_instance_uid, "series", 3),
    ]
    assert events[0].detail["bytes"] == sum(i.size_bytes for i in ct + mr)
    assert events[1].detail["series_instance_uid"] == ct[0].series.series_instance_uid


def test_receiver_of_a_share_downloads_the_shared_study(client, principal_a, inst_b, two_series_study):
    study, ct, mr = two_series_study
    reader = member(inst_b, "reader_b", ["receive"])
    share(principal=principal_a, study=study, with_institution=inst_b)
    login(client, reader.user)
    _, data = _download(client, _study_url(study))
    assert set(_members_by_sha(data)) == {i.sha256 for i in ct + mr}
    event = AuditEvent.objects.get(action="study.download")
    assert event.institution_id == inst_b.pk and event.detail["shared_by_institution"] == study.institution_id


def test_hostile_patient_id_gives_names_that_stay_inside_the_folder(client, admin_a, store):
    [instance] = store([synth_bytes("CT", patient_id="../../etc/.ssh..")])
    login(client, admin_a.user)
    response, data = _download(client, _study_url(instance.study))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        [name] = archive.namelist()
        assert hashlib.sha256(archive.read(name)).hexdigest() == instance.sha256
    path = PurePosixPath(name)
    assert not path.is_absolute() and ".." not in path.parts and "\\" not in name
    assert path.parts[0] == "etc_.ssh"
    assert "/" not in response["Content-Disposition"] and ".." not in response["Content-Disposition"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("..", "fallback"),
        ("", "fallback"),
        ("../../x", "x"),
        ("a\\b/c", "a_b_c"),
        ("C:\\Windows", "C_Windows"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("  PAT 001  ", "PAT_001"),
        ("Müller", "M_ller"),
        ("1.2.840.10008", "1.2.840.10008"),
    ],
)
def test_safe_component_keeps_only_harmless_names(value, expected):
    assert safe_component(value, "fallback") == expected


def test_member_name_without_series_number_is_the_series_uid():
    name = member_name(patient_id="P", study_uid="1.2", series_number=None, series_uid="1.2.3", sop_uid="1.2.3.4")
    assert name == "P/1.2/1.2.3/1.2.3.4.dcm"


@pytest.mark.slow
def test_study_of_200_instances_streams_with_little_memory_and_arrives_whole(client, admin_a, store):
    """200 instances of 256x256 16-bit CT (about 26 MB): every member arrives intact, and the peak memory allocated while
    streaming stays a small fraction of the zip (files are read in chunks of 1 MiB, one at a time)."""
    study_uid, series_uid = generate_uid(), generate_uid()
    blobs = (
        synth_bytes("CT", rows=256, cols=256, study_uid=study_uid, series_uid=series_uid, instance_number=n + 1, patient_id="BIG")
        for n in range(200)
    )
    instances = store(blobs)
    total = sum(i.size_bytes for i in instances)
    assert total > 25_000_000
    login(client, admin_a.user)
    response = client.get(f"/studies/{study_uid}/download.zip")
    assert response.streaming and int(response["Content-Length"]) > total
    with tempfile.TemporaryFile() as spooled:
        tracemalloc.start()
        try:
            for chunk in response.streaming_content:
                spooled.write(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert spooled.tell() == int(response["Content-Length"])
        assert peak < total / 8, f"peak {peak:,} bytes while streaming {total:,}"
        spooled.seek(0)
        with zipfile.ZipFile(spooled) as archive:
            names = archive.namelist()
            assert len(names) == 200 == len(set(names))
            shas = {hashlib.sha256(archive.read(name)).hexdigest() for name in names}
    assert shas == set(Instance.objects.filter(study__study_instance_uid=study_uid).values_list("sha256", flat=True))
    print(f"\nzip of 200 instances: {total:,} bytes of DICOM, peak memory allocated while streaming {peak:,} bytes")
