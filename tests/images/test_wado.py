"""WADO-RS (PS3.18 10.4) and WADO-URI (PS3.18 9) under /dicomweb: what a viewer, a script or dicomweb-client gets back."""

import hashlib
import io
import json
import sys
import tracemalloc
from urllib.parse import quote

import numpy as np
import pytest
import requests
from django.core.files.storage import storages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from images import retrieve
from images.dicomweb.multipart import MultipartReader, parse_media_type
from images.ingest import ingest_instance
from images.models import Instance
from images.sharing.services import revoke, share
from images.transcode import PixelDescription
from subscribers import services
from subscribers.models import AuditEvent
from tests.dicom_files import COMPRESSED, bundled_bytes, make_dataset, rle_compressed, series, synth_bytes, to_bytes

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
LOSSLESS_TARGETS = [JPEG2000Lossless, JPEGLSLossless, RLELossless, DeflatedExplicitVRLittleEndian]


@pytest.fixture
def token_a(admin_a, principal_a):
    return services.issue_token(actor=principal_a, membership=admin_a, name="viewer")[1]


@pytest.fixture
def token_b(admin_b, principal_b):
    return services.issue_token(actor=principal_b, membership=admin_b, name="viewer")[1]


def store(principal, data: bytes) -> Instance:
    return ingest_instance(principal=principal, data=data, source="upload").instance


def study_url(instance) -> str:
    return f"/dicomweb/studies/{instance.study.study_instance_uid}"


def series_url(instance) -> str:
    return f"{study_url(instance)}/series/{instance.series.series_instance_uid}"


def instance_url(instance) -> str:
    return f"{series_url(instance)}/instances/{instance.sop_instance_uid}"


def get(client, path, *, token, accept=None, **extra):
    if accept is not None:
        extra["HTTP_ACCEPT"] = accept
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}", **extra)


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def parts(response) -> list[tuple[dict, bytes]]:
    """The parts of a multipart/related answer, read with the archive's own streaming reader."""
    media_type, params = parse_media_type(response["Content-Type"])
    assert media_type == "multipart/related", response["Content-Type"]
    reader = MultipartReader(io.BytesIO(body(response)), params["boundary"].encode(), max_bytes=1 << 30)
    return [(part.headers, b"".join(part.chunks())) for part in reader]


def only_part(response) -> tuple[dict, bytes]:
    (part,) = parts(response)
    return part


def pixels(data: bytes, **options) -> np.ndarray:
    ds = dcmread(io.BytesIO(data))
    if options:
        ds.pixel_array_options(**options)
    return ds.pixel_array


def stored_bytes(instance) -> bytes:
    with storages["archive"].open(instance.storage_name) as fh:
        return fh.read()


# --- Instances as stored and converted -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        COMPRESSED["jpeg2000_lossless"],
        COMPRESSED["jpeg_ls_lossless"],
        COMPRESSED["rle"],
        COMPRESSED["jpeg_baseline"],
        COMPRESSED["big_endian"],
    ],
)
def test_transfer_syntax_star_gives_the_stored_bytes_exactly(client, token_a, principal_a, name):
    data = bundled_bytes(name)
    instance = store(principal_a, data)

    response = get(client, instance_url(instance), token=token_a, accept=DICOM_ANY)

    assert response.status_code == 200
    headers, received = only_part(response)
    assert hashlib.sha256(received).hexdigest() == instance.sha256 == hashlib.sha256(data).hexdigest()
    assert headers["content-type"] == f"application/dicom; transfer-syntax={instance.transfer_syntax_uid}"
    assert headers["content-location"] == f"http://testserver{instance_url(instance)}"


@pytest.mark.parametrize(
    "name", [COMPRESSED["jpeg2000_lossless"], COMPRESSED["jpeg_ls_lossless"], COMPRESSED["rle"], COMPRESSED["big_endian"], "CT_small.dcm"]
)
def test_without_a_transfer_syntax_the_instance_comes_explicit_vr_little_endian_with_the_same_pixels(client, token_a, principal_a, name):
    data = bundled_bytes(name)
    instance = store(principal_a, data)

    response = get(client, instance_url(instance), token=token_a, accept='multipart/related; type="application/dicom"')

    headers, received = only_part(response)
    ds = dcmread(io.BytesIO(received))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert ds.SOPInstanceUID == instance.sop_instance_uid
    assert np.array_equal(ds.pixel_array, pixels(data))


def test_a_plain_request_without_accept_also_gets_explicit_vr_little_endian(client, token_a, principal_a):
    instance = store(principal_a, bundled_bytes(COMPRESSED["rle"]))
    response = get(client, instance_url(instance), token=token_a)
    assert response["Content-Type"].startswith('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1;')
    assert dcmread(io.BytesIO(only_part(response)[1])).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_lossless_transfer_syntaxes_round_trip_pixel_identical(client, token_a, principal_a, modality, target):
    original = synth_bytes(modality, rows=96, cols=80, frames=2)
    instance = store(principal_a, original)
    url = instance_url(instance)

    converted = only_part(get(client, url, token=token_a, accept=f'multipart/related; type="application/dicom"; transfer-syntax={target}'))[
        1
    ]
    assert dcmread(io.BytesIO(converted)).file_meta.TransferSyntaxUID == target
    assert np.array_equal(pixels(converted), pixels(original))

    # ... and back: pydicom, not this archive, decompresses what it received to the same pixels.
    back = dcmread(io.BytesIO(converted))
    if back.file_meta.TransferSyntaxUID.is_compressed:
        back.decompress(generate_instance_uid=False)
    assert np.array_equal(back.pixel_array, pixels(original))


def test_a_lossy_source_can_be_given_losslessly_compressed_and_stays_marked_lossy(client, token_a, principal_a):
    data = bundled_bytes(COMPRESSED["jpeg2000_ct"])  # lossy JPEG 2000 CT
    instance = store(principal_a, data)
    received = only_part(
        get(
            client,
            instance_url(instance),
            token=token_a,
            accept=f"multipart/related; type=application/dicom; transfer-syntax={JPEGLSLossless}",
        )
    )[1]
    ds = dcmread(io.BytesIO(received))
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless and ds.LossyImageCompression == "01"
    assert np.array_equal(ds.pixel_array, pixels(data))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.50", "1.2.3.4.5.6.7", "1.2.840.10008.1.2.4.91"])
def test_a_transfer_syntax_that_cannot_be_produced_is_406_naming_what_can(client, token_a, principal_a, syntax):
    instance = store(principal_a, bundled_bytes("CT_small.dcm"))
    response = get(
        client, instance_url(instance), token=token_a, accept=f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    )
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert syntax in error and "1.2.840.10008.1.2.4.80 (JPEG-LS Lossless Image Compression)" in error and "as stored" in error


def test_an_image_a_lossless_coder_cannot_take_is_406_with_the_reason(client, token_a, principal_a):
    ds = make_dataset("OT", rows=16, cols=16)  # 32-bit values, as a dose grid has
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = np.arange(256, dtype="<u4").tobytes()
    instance = store(principal_a, to_bytes(ds))
    response = get(
        client, instance_url(instance), token=token_a, accept=f"multipart/related; type=application/dicom; transfer-syntax={JPEGLSLossless}"
    )
    assert response.status_code == 406
    assert "does not encode" in response.json()["error"] and "32 of 32 bits" in response.json()["error"]


def test_q_values_pick_the_best_syntax_that_can_be_produced(client, token_a, principal_a):
    instance = store(principal_a, bundled_bytes("CT_small.dcm"))
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50, '
        f'multipart/related; type="application/dicom"; transfer-syntax={RLELossless}; q=0.5, '
        'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.2'
    )
    headers, received = only_part(get(client, instance_url(instance), token=token_a, accept=accept))
    assert headers["content-type"] == f"application/dicom; transfer-syntax={RLELossless}"
    star_first = 'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.9, multipart/related; type="application/dicom"; q=0.1'
    assert only_part(get(client, instance_url(instance), token=token_a, accept=star_first))[1] == stored_bytes(instance)


def test_accepting_only_something_else_is_406(client, token_a, principal_a):
    instance = store(principal_a, bundled_bytes("CT_small.dcm"))
    assert get(client, instance_url(instance), token=token_a, accept="application/dicom+json").status_code == 406
    assert get(client, study_url(instance), token=token_a, accept="text/html").status_code == 406


def test_a_single_instance_can_be_asked_for_as_one_application_dicom_part(client, token_a, principal_a):
    instance = store(principal_a, bundled_bytes(COMPRESSED["rle"]))
    response = get(client, instance_url(instance), token=token_a, accept="application/dicom; transfer-syntax=*")
    assert response["Content-Type"] == f"application/dicom; transfer-syntax={RLELossless}"
    assert body(response) == stored_bytes(instance)


def test_the_accept_query_parameter_wins_over_the_header(client, token_a, principal_a):
    instance = store(principal_a, bundled_bytes(COMPRESSED["rle"]))
    response = get(client, f"{instance_url(instance)}?accept={quote(DICOM_ANY)}", token=token_a, accept="text/html")
    assert only_part(response)[1] == stored_bytes(instance)


def test_head_answers_the_headers_without_reading_or_auditing(client, token_a, principal_a):
    instance = store(principal_a, bundled_bytes(COMPRESSED["rle"]))
    storages["archive"].delete(instance.storage_name)  # nothing is read, so nothing is missed
    response = client.head(instance_url(instance), HTTP_AUTHORIZATION=f"Bearer {token_a}", HTTP_ACCEPT=DICOM_ANY)
    assert response.status_code == 200 and response["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert not AuditEvent.objects.filter(action="dicomweb.retrieve").exists()


def test_the_index_describes_each_instance_as_its_file_does(principal_a):
    """The transfer syntax is chosen from the index before any file is opened: it must see what the file holds."""
    study_uid = generate_uid()
    sent = [
        synth_bytes("CT", study_uid=study_uid),  # 12 of 16 bits
        to_bytes(rle_compressed(make_dataset("MR", study_uid=study_uid))),
        bundled_bytes(COMPRESSED["jpeg_baseline"]),  # lossy, YCbCr, 30 frames
        bundled_bytes("examples_rgb_color.dcm"),
    ]
    for data in sent:
        store(principal_a, data)
    for data in sent:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        _, (instance,) = retrieve.find_instances(principal_a, study_uid=ds.StudyInstanceUID, sop_uid=ds.SOPInstanceUID)
        from_file = PixelDescription.of_dataset(dcmread(io.BytesIO(data)))
        assert retrieve.describe(instance) == from_file
        assert from_file.bits_stored in (8, 12, 16) and from_file.samples_per_pixel in (1, 3)


def test_a_study_is_streamed_one_chunk_at_a_time_not_held_in_memory(client, token_a, principal_a):
    study_uid = generate_uid()
    for number in range(1, 7):
        store(principal_a, synth_bytes("CT", study_uid=study_uid, instance_number=number, rows=512, cols=512, frames=2))  # 1 MB each
    url = f"/dicomweb/studies/{study_uid}"
    response = get(client, url, token=token_a, accept=DICOM_ANY)
    tracemalloc.start()
    try:
        total = sum(len(chunk) for chunk in response.streaming_content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 6_000_000
    assert peak < 3_000_000, f"peak Python memory {peak:,} bytes while streaming {total:,} bytes"


# --- Studies and series -------------------------------------------------------------------------------------------------


def test_a_study_streams_one_part_per_instance_in_series_order(client, token_a, principal_a):
    study_uid = generate_uid()
    first = series("CT", 3, study_uid=study_uid, series_number=1)
    second = series("MR", 2, study_uid=study_uid, series_number=2)
    for data in second + first:
        store(principal_a, data)
    instance = Instance.objects.filter(study__study_instance_uid=study_uid).select_related("study", "series").first()

    response = get(client, study_url(instance), token=token_a, accept=DICOM_ANY)

    assert response.streaming and response.status_code == 200
    received = parts(response)
    assert [data for _, data in received] == first + second
    for headers, data in received:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert headers["content-location"].endswith(f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")

    one_series = (
        Instance.objects.filter(study__study_instance_uid=study_uid, series__modality="MR").select_related("study", "series").first()
    )
    assert [data for _, data in parts(get(client, series_url(one_series), token=token_a, accept=DICOM_ANY))] == second


def test_a_study_with_mixed_syntaxes_gives_each_part_its_own(client, token_a, principal_a):
    study_uid = generate_uid()
    plain = make_dataset("CT", study_uid=study_uid, instance_number=1)
    compressed = rle_compressed(make_dataset("CT", study_uid=study_uid, instance_number=2))
    for ds in (plain, compressed):
        store(principal_a, to_bytes(ds))
    instance = Instance.objects.filter(study__study_instance_uid=study_uid).select_related("study").first()
    response = get(client, study_url(instance), token=token_a, accept=DICOM_ANY)
    assert "transfer-syntax" not in response["Content-Type"]
    assert [headers["content-type"].split("=")[1] for headers, _ in parts(response)] == [ExplicitVRLittleEndian, RLELossless]


def test_a_study_is_read_one_instance_at_a_time_with_constant_queries(client, token_a, principal_a):
    small_study, large_study = series("CT", 2), series("CT", 10)
    for data in small_study + large_study:
        store(principal_a, data)
    urls = [f"/dicomweb/studies/{dcmread(io.BytesIO(s[0]), stop_before_pixels=True).StudyInstanceUID}" for s in (small_study, large_study)]
    body(get(client, urls[0], token=token_a))  # the token's first use records it once

    counts = []
    for url in urls:
        for suffix, accept in (("", DICOM_ANY), ("", None), ("/metadata", None)):
            with CaptureQueriesContext(connection) as queries:
                response = get(client, url + suffix, token=token_a, accept=accept)
                body(response)
            assert response.status_code == 200
            counts.append(len(queries))
    assert counts[:3] == counts[3:], counts


# --- Metadata -----------------------------------------------------------------------------------------------------------


def test_metadata_comes_from_the_index_even_when_the_file_is_gone(client, token_a, principal_a):
    ds = make_dataset("CT", rows=128, cols=128)
    ds.add_new(0x60000010, "US", 128)
    ds.add_new(0x60000011, "US", 128)
    ds.add_new(0x60003000, "OW", bytes(range(256)) * 8)  # 2 kB overlay: above the bulk data threshold
    instance = store(principal_a, to_bytes(ds))
    url = instance_url(instance)
    bulk_response = get(client, f"{url}/bulkdata/60003000", token=token_a)
    assert only_part(bulk_response)[1] == bytes(range(256)) * 8
    storages["archive"].delete(instance.storage_name)

    for resource in (study_url(instance), series_url(instance), url):
        response = get(client, f"{resource}/metadata", token=token_a)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/dicom+json"
        (item,) = json.loads(body(response))
        assert item["00080018"]["Value"] == [instance.sop_instance_uid]
        # The imaging conditions travel as the ordinary attributes they are.
        assert item["00180060"]["Value"] == [120.0] and item["00181210"]["Value"] == ["B30f"]
        assert item["60003000"] == {"vr": "OW", "BulkDataURI": f"http://testserver{url}/bulkdata/60003000"}
        assert item["7FE00010"] == {"vr": "OW", "BulkDataURI": f"http://testserver{url}/bulkdata/7FE00010"}
        assert item["00083002"]["Value"] == [ExplicitVRLittleEndian]
        assert list(item) == sorted(item)


def test_metadata_of_a_study_lists_every_instance(client, token_a, principal_a):
    study_uid = generate_uid()
    for data in series("CT", 3, study_uid=study_uid) + series("MR", 2, study_uid=study_uid):
        store(principal_a, data)
    instance = Instance.objects.filter(study__study_instance_uid=study_uid).select_related("study", "series").first()
    items = json.loads(body(get(client, f"{study_url(instance)}/metadata", token=token_a)))
    assert sorted(item["00080018"]["Value"][0] for item in items) == sorted(
        Instance.objects.filter(study__study_instance_uid=study_uid).values_list("sop_instance_uid", flat=True)
    )
    assert len(json.loads(body(get(client, f"{series_url(instance)}/metadata", token=token_a)))) == 3
    assert (
        get(client, f"{study_url(instance)}/metadata", token=token_a, accept="multipart/related; type=application/dicom+xml").status_code
        == 406
    )


# --- Frames and bulk data -----------------------------------------------------------------------------------------------


def test_frames_of_a_multiframe_instance_are_its_decoded_frames(client, token_a, principal_a):
    data = synth_bytes("CT", frames=4, rows=32, cols=48)
    instance = store(principal_a, data)
    expected = pixels(data)

    response = get(client, f"{instance_url(instance)}/frames/1,2", token=token_a)
    received = parts(response)
    assert response["Content-Type"].startswith('multipart/related; type="application/octet-stream"')
    assert [frame for _, frame in received] == [expected[0].tobytes(), expected[1].tobytes()]
    assert received[1][0]["content-location"].endswith("/frames/2")
    reversed_order = [frame for _, frame in parts(get(client, f"{instance_url(instance)}/frames/4,1", token=token_a))]
    assert reversed_order == [expected[3].tobytes(), expected[0].tobytes()]


def test_compressed_frames_come_decoded_by_default_and_as_stored_when_asked(client, token_a, principal_a):
    data = bundled_bytes(COMPRESSED["jpeg_baseline"])  # 30 frames of JPEG baseline
    instance = store(principal_a, data)
    ds = dcmread(io.BytesIO(data))
    url = f"{instance_url(instance)}/frames/1,2"

    stored = parts(get(client, url, token=token_a, accept=OHIF_FRAMES))
    assert [frame for _, frame in stored] == list(generate_frames(ds.PixelData, number_of_frames=30))[:2]
    assert {headers["content-type"] for headers, _ in stored} == {"image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"}
    assert parts(get(client, url, token=token_a, accept="multipart/related; type=image/jpeg")) == stored

    decoded = parts(get(client, url, token=token_a, accept="multipart/related; type=application/octet-stream"))
    expected = pixels(data, decoding_plugin="pylibjpeg", as_rgb=True)
    assert [frame for _, frame in decoded] == [expected[0].tobytes(), expected[1].tobytes()]
    assert get(client, url, token=token_a, accept="multipart/related; type=image/jls").status_code == 406


@pytest.mark.parametrize("frames", ["99", "1,99", "0", "1,,2", "a", "1,1", "-1"])
def test_frames_out_of_range_or_malformed_are_400(client, token_a, principal_a, frames):
    instance = store(principal_a, synth_bytes("CT", frames=2))
    response = get(client, f"{instance_url(instance)}/frames/{frames}", token=token_a)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_frames"


def test_pixel_data_as_bulk_data_is_every_frame(client, token_a, principal_a):
    data = bundled_bytes("SC_rgb_rle_2frame.dcm")
    instance = store(principal_a, data)
    received = parts(get(client, f"{instance_url(instance)}/bulkdata/7FE00010", token=token_a, accept=OHIF_FRAMES))
    assert [frame for _, frame in received] == list(generate_frames(dcmread(io.BytesIO(data)).PixelData, number_of_frames=2))
    assert get(client, f"{instance_url(instance)}/bulkdata/00091234", token=token_a).status_code == 404
    assert get(client, f"{instance_url(instance)}/bulkdata/7FE0", token=token_a).status_code == 400


# --- Who may retrieve, and the audit trail --------------------------------------------------------------------------------


def every_resource(instance) -> list[str]:
    url = instance_url(instance)
    wado_uri = (
        f"/dicomweb/wado?requestType=WADO&studyUID={instance.study.study_instance_uid}&seriesUID={instance.series.series_instance_uid}"
        f"&objectUID={instance.sop_instance_uid}&contentType=application/dicom"
    )
    return [
        study_url(instance),
        series_url(instance),
        url,
        f"{study_url(instance)}/metadata",
        f"{series_url(instance)}/metadata",
        f"{url}/metadata",
        f"{url}/frames/1",
        f"{url}/bulkdata/7FE00010",
        wado_uri,
    ]


def test_another_institution_gets_404_for_every_resource(client, token_a, token_b, principal_a, inst_b):
    instance = store(principal_a, synth_bytes("CT"))
    for resource in every_resource(instance):
        response = get(client, resource, token=token_b)
        assert response.status_code == 404, resource
        assert response.json() == {"error": "Not found.", "code": "not_found"}
    assert get(client, every_resource(instance)[0], token=token_a).status_code == 200
    assert not AuditEvent.objects.filter(action="dicomweb.retrieve", institution=inst_b).exists()


def test_without_credentials_it_is_401(client, principal_a):
    instance = store(principal_a, synth_bytes("CT"))
    assert client.get(instance_url(instance)).status_code == 401


def test_a_shared_study_is_retrievable_by_the_receiver_until_revoked(client, token_b, principal_a, inst_b):
    instance = store(principal_a, bundled_bytes(COMPRESSED["jpeg_ls_lossless"]))
    given = share(principal=principal_a, study=instance.study, with_institution=inst_b)

    for resource in every_resource(instance):
        response = get(client, resource, token=token_b)
        assert response.status_code == 200, resource
        body(response)
    assert only_part(get(client, instance_url(instance), token=token_b, accept=DICOM_ANY))[1] == stored_bytes(instance)
    event = AuditEvent.objects.filter(action="dicomweb.retrieve", institution=inst_b).latest("pk")
    assert event.detail["shared_by_institution"] == instance.institution_id

    revoke(principal=principal_a, share=given)
    for resource in every_resource(instance):
        assert get(client, resource, token=token_b).status_code == 404, resource


def test_each_retrieval_writes_one_audit_event(client, token_a, principal_a, inst_a):
    study_uid = generate_uid()
    for data in series("CT", 3, study_uid=study_uid):
        store(principal_a, data)
    instance = Instance.objects.filter(study__study_instance_uid=study_uid).select_related("study", "series").first()
    before = AuditEvent.objects.filter(action="dicomweb.retrieve").count()

    body(
        get(client, study_url(instance), token=token_a, accept=f"multipart/related; type=application/dicom; transfer-syntax={RLELossless}")
    )
    body(get(client, f"{series_url(instance)}/metadata", token=token_a))
    body(get(client, f"{instance_url(instance)}/frames/1", token=token_a))

    events = list(AuditEvent.objects.filter(action="dicomweb.retrieve").order_by("pk"))[before:]
    assert [(e.detail["level"], e.detail["resource"], e.detail["count"]) for e in events] == [
        ("study", "instances", 3),
        ("series", "metadata", 3),
        ("instance", "frames", 1),
    ]
    assert events[0].detail["uid"] == study_uid and events[0].detail["transfer_syntax"] == [RLELossless]
    assert events[1].detail["uid"] == instance.series.series_instance_uid
    assert events[2].detail["uid"] == instance.sop_instance_uid and events[2].detail["frames"] == [1]
    assert {e.institution for e in events} == {inst_a} and {e.object_id for e in events} == {study_uid}
    assert get(client, instance_url(instance), token=token_a, accept="text/html").status_code == 406
    assert AuditEvent.objects.filter(action="dicomweb.retrieve").count() == before + 3  # a refusal delivers nothing


# --- WADO-URI -----------------------------------------------------------------------------------------------------------


def wado_uri(instance, **params) -> str:
    query = {
        "requestType": "WADO",
        "studyUID": instance.study.study_instance_uid,
        "seriesUID": instance.series.series_instance_uid,
        "objectUID": instance.sop_instance_uid,
    } | params
    return "/dicomweb/wado?" + "&".join(f"{k}={v}" for k, v in query.items() if v is not None)


def test_wado_uri_gives_the_dicom_file_in_the_asked_or_default_syntax(client, token_a, principal_a):
    data = bundled_bytes(COMPRESSED["jpeg2000_lossless"])
    instance = store(principal_a, data)

    default = get(client, wado_uri(instance, contentType="application/dicom"), token=token_a)
    assert default.status_code == 200 and default["Content-Type"] == "application/dicom"
    ds = dcmread(io.BytesIO(body(default)))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and np.array_equal(ds.pixel_array, pixels(data))

    as_jls = dcmread(
        io.BytesIO(body(get(client, wado_uri(instance, contentType="application/dicom", transferSyntax=JPEGLSLossless), token=token_a)))
    )
    assert as_jls.file_meta.TransferSyntaxUID == JPEGLSLossless
    # PS3.18 8.2.11: a syntax that cannot be produced falls back to Explicit VR Little Endian.
    fallback = get(client, wado_uri(instance, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"), token=token_a)
    assert dcmread(io.BytesIO(body(fallback))).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert body(get(client, wado_uri(instance, contentType="application/dicom", transferSyntax="*"), token=token_a)) == data
    assert AuditEvent.objects.filter(action="dicomweb.retrieve", detail__resource="wado-uri").count() == 4


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"requestType": None}, "requestType"),
        ({"requestType": "WADO-RS"}, "requestType"),
        ({"studyUID": None}, "studyUID"),
        ({"seriesUID": "1.2.abc"}, "seriesUID"),
        ({"objectUID": ""}, "objectUID"),
        ({"contentType": "application/dicom", "transferSyntax": "JPEG"}, "transferSyntax"),
        ({"contentType": "application/dicom", "frameNumber": "1"}, "frameNumber"),
        ({"contentType": "image/jpeg", "frameNumber": "3"}, "frameNumber"),
        ({"contentType": "image/jpeg", "windowCenter": "40"}, "windowWidth"),
        ({"contentType": "image/jpeg", "anonymize": "yes"}, "anonymize"),
    ],
)
def test_wado_uri_with_a_missing_or_bad_parameter_is_400_naming_it(client, token_a, principal_a, params, named):
    instance = store(principal_a, synth_bytes("CT"))
    response = get(client, wado_uri(instance, **params), token=token_a)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{named}")


def test_wado_uri_renders_jpeg_through_the_rendering_module_or_answers_406_without_it(client, token_a, principal_a, monkeypatch):
    instance = store(principal_a, synth_bytes("CT", rows=64, cols=64))
    response = get(client, wado_uri(instance, contentType="image/jpeg", columns="32"), token=token_a)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg" and response.content[:2] == b"\xff\xd8"
    assert get(client, wado_uri(instance), token=token_a)["Content-Type"] == "image/jpeg"  # the default for a single frame
    multiframe = store(principal_a, synth_bytes("CT", frames=2))
    assert get(client, wado_uri(multiframe), token=token_a)["Content-Type"] == "application/dicom"
    assert get(client, wado_uri(multiframe, frameNumber="2"), token=token_a)["Content-Type"] == "image/jpeg"

    monkeypatch.setitem(sys.modules, "images.rendering", None)  # as before the rendering module existed
    monkeypatch.delattr("images.rendering", raising=False)
    response = get(client, wado_uri(instance, contentType="image/jpeg"), token=token_a)
    assert response.status_code == 406 and "application/dicom" in response.json()["error"]


# --- A real third-party client ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dicomweb_client_retrieves_what_was_stored(live_server, admin_a, principal_a):
    from dicomweb_client.api import DICOMwebClient

    raw = services.issue_token(actor=principal_a, membership=admin_a, name="dicomweb-client")[1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    client = DICOMwebClient(url=live_server.url + "/dicomweb", session=session)
    study_uid, series_uid = generate_uid(), generate_uid()
    sent = [synth_bytes("CT", study_uid=study_uid, series_uid=series_uid, instance_number=i, frames=2) for i in (1, 2)]
    compressed = bundled_bytes(COMPRESSED["jpeg_ls_lossless"])
    instances = [store(principal_a, data) for data in [*sent, compressed]]
    first, jls = instances[0], instances[2]

    ds = client.retrieve_instance(study_uid, series_uid, first.sop_instance_uid)
    assert ds.SOPInstanceUID == first.sop_instance_uid and np.array_equal(ds.pixel_array, pixels(sent[0]))

    datasets = client.retrieve_series(study_uid, series_uid, media_types=(("application/dicom", "*"),))
    assert [d.SOPInstanceUID for d in datasets] == [i.sop_instance_uid for i in instances[:2]]
    assert [np.array_equal(d.pixel_array, pixels(data)) for d, data in zip(datasets, sent, strict=True)] == [True, True]

    metadata = client.retrieve_instance_metadata(study_uid, series_uid, first.sop_instance_uid)
    assert metadata["00080018"]["Value"] == [first.sop_instance_uid] and metadata["0020000E"]["Value"] == [series_uid]
    # This client sends its Host header without the port, and absolute URLs follow the Host header.
    bulk_uri = metadata["7FE00010"]["BulkDataURI"].replace("http://localhost/", f"{live_server.url}/")
    pixel_bulk = client.retrieve_bulkdata(bulk_uri)
    assert pixel_bulk == [frame.tobytes() for frame in pixels(sent[0])]

    frames = client.retrieve_instance_frames(study_uid, series_uid, first.sop_instance_uid, frame_numbers=[2])
    assert frames == [pixels(sent[0])[1].tobytes()]

    jls_study, jls_series = jls.study.study_instance_uid, jls.series.series_instance_uid
    stored_frames = client.retrieve_instance_frames(
        jls_study, jls_series, jls.sop_instance_uid, frame_numbers=[1], media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),)
    )
    assert stored_frames == list(generate_frames(dcmread(io.BytesIO(compressed)).PixelData, number_of_frames=1))
    decoded_frames = client.retrieve_instance_frames(jls_study, jls_series, jls.sop_instance_uid, frame_numbers=[1])
    assert decoded_frames == [pixels(compressed).tobytes()]
    assert client.retrieve_instance(jls_study, jls_series, jls.sop_instance_uid, media_types=(("application/dicom", "*"),)).PixelData == (
        dcmread(io.BytesIO(compressed)).PixelData
    )
