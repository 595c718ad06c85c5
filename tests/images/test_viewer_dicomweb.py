"""The DICOMweb calls OHIF 3.13 makes when it opens a study, replayed exactly as the browser sends them (recorded from
the viewer: query strings, Accept headers, the portal's session cookie and no token), and what the viewer needs back."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from images.dicomweb.multipart import MultipartReader, parse_media_type
from images.ingest import ingest_instance
from tests.conftest import login
from tests.dicom_files import COMPRESSED, bundled_bytes, make_dataset, to_bytes

# The Accept headers OHIF's dicomweb-client sends (omitQuotationForMultipartRequest leaves the type unquoted).
JSON = "application/dicom+json"
FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
STUDY_FIELDS = "includefield=00081030%2C00080060%2C00080090%2C00100030"
SERIES_FIELDS = "includefield=00080021%2C00080031%2C0008103E%2C00200011"


@pytest.fixture
def viewer_session(client, clinician_a):
    login(client, clinician_a.user)
    return client


@pytest.fixture
def ct_series(principal_a):
    """Three CT slices of one series of patient PAT-001, plus another study of the same patient and one of another."""
    study, series = generate_uid(), generate_uid()
    datasets = [make_dataset("CT", study_uid=study, series_uid=series, instance_number=n, study_description="Chest CT") for n in (1, 2, 3)]
    instances = [ingest_instance(principal=principal_a, data=to_bytes(ds), source="test").instance for ds in datasets]
    ingest_instance(principal=principal_a, data=to_bytes(make_dataset("MR", study_description="Earlier MR")), source="test")
    ingest_instance(principal=principal_a, data=to_bytes(make_dataset("CT", patient_id="PAT-002")), source="test")
    return study, series, instances, datasets


def value(result: dict, tag: str):
    return (result.get(tag, {}).get("Value") or [None])[0]


def parts(response) -> list[tuple[dict, bytes]]:
    media_type, params = parse_media_type(response["Content-Type"])
    assert media_type == "multipart/related", response["Content-Type"]
    reader = MultipartReader(io.BytesIO(b"".join(response.streaming_content)), params["boundary"].encode(), max_bytes=1 << 30)
    return [(part.headers, b"".join(part.chunks())) for part in reader]


def test_ohif_finds_the_study_by_its_uid_with_the_fields_it_shows(viewer_session, ct_series):
    study, *_ = ct_series
    response = viewer_session.get(
        f"/dicomweb/studies?limit=101&offset=0&fuzzymatching=true&{STUDY_FIELDS}&StudyInstanceUID={study}", HTTP_ACCEPT=JSON
    )
    assert response.status_code == 200 and response["Content-Type"] == JSON
    (result,) = response.json()
    assert value(result, "0020000D") == study
    assert value(result, "00081030") == "Chest CT"
    assert value(result, "00080060") == "CT" and value(result, "00080061") == "CT"
    assert value(result, "00100030") == "19700101" and value(result, "00080090") == {"Alphabetic": "Referrer^Rita"}
    assert value(result, "00201208") == 3


def test_ohif_finds_the_patients_other_studies_with_a_hex_tag_filter(viewer_session, ct_series):
    response = viewer_session.get(
        f"/dicomweb/studies?00100020=PAT-001&limit=101&offset=0&fuzzymatching=true&{STUDY_FIELDS}", HTTP_ACCEPT=JSON
    )
    assert response.status_code == 200
    assert sorted(value(result, "00081030") for result in response.json()) == ["Chest CT", "Earlier MR"]


def test_ohif_lists_the_series_with_the_fields_it_shows(viewer_session, ct_series):
    study, series, *_ = ct_series
    response = viewer_session.get(f"/dicomweb/studies/{study}/series?{SERIES_FIELDS}", HTTP_ACCEPT=JSON)
    assert response.status_code == 200
    (result,) = response.json()
    assert value(result, "0020000E") == series and value(result, "0008103E") == "CT series 1"
    assert value(result, "00200011") == 1 and value(result, "00080021") == "20261102" and value(result, "00201209") == 3


def test_ohif_reads_the_series_metadata_it_builds_the_stack_from(viewer_session, ct_series):
    study, series, instances, _ = ct_series
    response = viewer_session.get(f"/dicomweb/studies/{study}/series/{series}/metadata", HTTP_ACCEPT=JSON)
    assert response.status_code == 200 and response["Content-Type"] == JSON
    metadata = sorted(json.loads(b"".join(response.streaming_content)), key=lambda item: value(item, "00200013"))
    assert [value(item, "00080018") for item in metadata] == [instance.sop_instance_uid for instance in instances]
    first = metadata[0]
    # What the viewer needs to place, scale and window each slice, and where its pixels are.
    assert first["00200032"]["Value"] == [0, 0, 1.25] and first["00200037"]["Value"] == [1, 0, 0, 0, 1, 0]
    assert first["00280030"]["Value"] == [0.7, 0.7] and value(first, "00281052") == -1024 and value(first, "00281050") == 40
    assert value(first, "00280010") == 64 and value(first, "00280100") == 16
    assert value(first, "00083002") == ExplicitVRLittleEndian
    assert first["7FE00010"]["BulkDataURI"] == (
        f"http://testserver/dicomweb/studies/{study}/series/{series}/instances/{instances[0].sop_instance_uid}/bulkdata/7FE00010"
    )


def test_ohif_gets_each_slices_pixels_as_a_frame(viewer_session, ct_series):
    study, series, instances, datasets = ct_series
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{instances[1].sop_instance_uid}/frames/1"
    response = viewer_session.get(url, HTTP_ACCEPT=FRAMES)
    assert response.status_code == 200
    ((headers, frame),) = parts(response)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert np.array_equal(np.frombuffer(frame, dtype="<u2").reshape(64, 64), datasets[1].pixel_array)


def test_ohif_gets_compressed_frames_as_stored_for_its_own_decoders(viewer_session, principal_a):
    data = bundled_bytes(COMPRESSED["jpeg_ls_lossless"])
    instance = ingest_instance(principal=principal_a, data=data, source="test").instance
    url = f"/dicomweb/studies/{instance.study.study_instance_uid}/series/{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}/frames/1"
    ((headers, frame),) = parts(viewer_session.get(url, HTTP_ACCEPT=FRAMES))
    assert headers["content-type"] == f"image/jls; transfer-syntax={JPEGLSLossless}"
    assert frame == next(generate_frames(dcmread(io.BytesIO(data)).PixelData, number_of_frames=1))


def test_bulk_data_asked_for_without_a_media_type_comes_as_multipart_the_viewer_decodes(viewer_session, ct_series):
    # OHIF's client asks for bulk data "single part" (XMLHttpRequest's default Accept) and decodes a multipart answer.
    study, series, instances, datasets = ct_series
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{instances[0].sop_instance_uid}/bulkdata/7FE00010"
    response = viewer_session.get(url, HTTP_ACCEPT="*/*")
    assert response.status_code == 200
    ((_, frame),) = parts(response)
    assert frame == datasets[0].pixel_array.astype("<u2").tobytes()


def test_another_institutions_session_finds_nothing_and_reads_nothing(client, admin_b, ct_series):
    study, series, instances, _ = ct_series
    login(client, admin_b.user)
    search = client.get(
        f"/dicomweb/studies?limit=101&offset=0&fuzzymatching=true&{STUDY_FIELDS}&StudyInstanceUID={study}", HTTP_ACCEPT=JSON
    )
    assert search.status_code == 200 and search.json() == []
    assert client.get(f"/dicomweb/studies?00100020=PAT-001&limit=101&offset=0&{STUDY_FIELDS}", HTTP_ACCEPT=JSON).json() == []
    instance = f"/dicomweb/studies/{study}/series/{series}/instances/{instances[0].sop_instance_uid}"
    for url, accept in [
        (f"/dicomweb/studies/{study}/series?{SERIES_FIELDS}", JSON),
        (f"/dicomweb/studies/{study}/series/{series}/metadata", JSON),
        (f"{instance}/frames/1", FRAMES),
    ]:
        assert client.get(url, HTTP_ACCEPT=accept).status_code == 404, url
