"""STOW-RS (PS3.18 10.5) at /dicomweb/studies: what a PACS, a script or dicomweb-client sees when it sends instances."""

import hashlib
import io
import socket
import subprocess
import sys
import tracemalloc
from datetime import timedelta

import pytest
import requests
from django.core.files.storage import storages
from django.test import Client
from django.utils import timezone
from pydicom import dcmread
from pydicom.uid import generate_uid

from images.dicomweb.multipart import MultipartError, MultipartReader
from images.models import Instance, Study
from subscribers import services
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.conftest import stored_files
from tests.dicom_files import bundled_bytes, make_dataset, rle_compressed, synth_bytes, to_bytes
from tests.factories import member
from tests.worker import die_with_parent, stop_process_group, tail, wait_until, worker_environment

BOUNDARY = "medarchive-test-7f3a9c"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
# Real files of several modalities and transfer syntaxes, with distinct SOP Instance UIDs (pydicom's MR_small
# variants share one UID, so only MR_small itself is here; an RLE MR is synthesized below).
REAL_FILES = ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "6154", "examples_ybr_color.dcm", "693_J2KI.dcm"]

FAILED = "00081198"
REFERENCED = "00081199"
RETRIEVE_URL = "00081190"


def multipart(*parts, boundary=BOUNDARY) -> bytes:
    """A multipart/related body; a part is bytes (sent as application/dicom) or (bytes, content type or None)."""
    out = io.BytesIO()
    for part in parts:
        data, content_type = part if isinstance(part, tuple) else (part, "application/dicom")
        out.write(f"--{boundary}\r\n".encode())
        if content_type:
            out.write(f"Content-Type: {content_type}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


@pytest.fixture
def token_a(admin_a, principal_a):
    return services.issue_token(actor=principal_a, membership=admin_a, name="PACS STOW-RS")[1]


@pytest.fixture
def token_b(admin_b, principal_b):
    return services.issue_token(actor=principal_b, membership=admin_b, name="PACS STOW-RS")[1]


def stow(client, body, *, token=None, path="/dicomweb/studies", content_type=CONTENT_TYPE, **extra):
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.generic("POST", path, body, content_type=content_type, **extra)


def uids(items, tag="00081155"):
    return [item[tag]["Value"][0] for item in items]


def sop_uid(data: bytes) -> str:
    return dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID


def read_back(ds):
    return dcmread(io.BytesIO(to_bytes(ds)))


def archive_files(tmp_path):
    root = tmp_path / "archive"
    return stored_files(root) if root.exists() else []


def stored_bytes(instance) -> bytes:
    with storages["archive"].open(instance.storage_name) as fh:
        return fh.read()


# --- Storing -----------------------------------------------------------------------------------------------------------


def test_real_files_of_several_modalities_and_transfer_syntaxes_are_stored_byte_identical(client, token_a, inst_a):
    sent = [bundled_bytes(name) for name in REAL_FILES] + [to_bytes(rle_compressed(make_dataset("MR")))]
    response = stow(client, multipart(*sent), token=token_a)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    body = response.json()
    assert FAILED not in body
    referenced = body[REFERENCED]["Value"]
    assert uids(referenced) == [sop_uid(data) for data in sent]
    for data, item in zip(sent, referenced, strict=True):
        instance = Instance.objects.select_related("study", "series").get(institution=inst_a, sop_instance_uid=sop_uid(data))
        assert stored_bytes(instance) == data and instance.sha256 == hashlib.sha256(data).hexdigest()
        assert instance.source == "stow-rs"
        assert item["00081150"]["Value"] == [instance.sop_class_uid]
        assert item[RETRIEVE_URL] == {
            "vr": "UR",
            "Value": [
                f"http://testserver/dicomweb/studies/{instance.study.study_instance_uid}"
                f"/series/{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}"
            ],
        }
    # Several studies in one request: the study-level Retrieve URL (Type 2) is present and empty.
    assert body[RETRIEVE_URL] == {"vr": "UR"}
    event = AuditEvent.objects.get(action="instances.store")
    assert event.detail["source"] == "stow-rs" and event.detail["stored"] == len(sent) and event.institution == inst_a


def test_one_study_in_a_request_answers_its_retrieve_url(client, token_a):
    study_uid = generate_uid()
    response = stow(client, multipart(*[synth_bytes("CT", study_uid=study_uid, instance_number=i) for i in (1, 2)]), token=token_a)
    assert response.status_code == 200
    assert response.json()[RETRIEVE_URL]["Value"] == [f"http://testserver/dicomweb/studies/{study_uid}"]
    assert Study.objects.get(study_instance_uid=study_uid).number_of_instances == 2


def test_sending_the_same_instances_again_is_a_plain_success_stored_once(client, token_a):
    body = multipart(synth_bytes("CT"), synth_bytes("MR"))
    first = stow(client, body, token=token_a)
    again = stow(client, body, token=token_a)
    assert first.status_code == again.status_code == 200
    assert uids(again.json()[REFERENCED]["Value"]) == uids(first.json()[REFERENCED]["Value"])
    assert all("00081196" not in item for item in again.json()[REFERENCED]["Value"])  # no Warning Reason
    assert Instance.objects.count() == 2
    assert AuditEvent.objects.filter(action="instances.store").count() == 2  # one per request


def test_parts_without_content_type_and_a_body_with_preamble_and_epilogue_are_read(client, token_a):
    data = synth_bytes("CT")
    body = b"This preamble is ignored.\r\n" + multipart((data, None)) + b"and so is this epilogue"
    response = stow(client, body, token=token_a, content_type=f"multipart/related; boundary={BOUNDARY}")
    assert response.status_code == 200, response.content
    assert uids(response.json()[REFERENCED]["Value"]) == [sop_uid(data)]


# --- Partial success and failures -----------------------------------------------------------------------------------------


def failed_items(response):
    return response.json()[FAILED]["Value"]


def test_mix_of_good_and_bad_parts_stores_the_good_and_names_the_bad_with_its_reason(client, token_a, inst_a):
    good = [synth_bytes("CT"), bundled_bytes("CT_small.dcm")]
    first_version = synth_bytes("MR", seed=1)
    stow(client, multipart(first_version), token=token_a)
    conflicting = synth_bytes("MR", sop_uid=sop_uid(first_version), seed=2)
    body = multipart(good[0], b"this is not a DICOM file" * 20, conflicting, good[1])
    response = stow(client, body, token=token_a)
    assert response.status_code == 202, response.content
    assert uids(response.json()[REFERENCED]["Value"]) == [sop_uid(data) for data in good]
    not_dicom, conflict = failed_items(response)
    # A part that is not DICOM has no UIDs to name: its part number and reason say which one and why.
    assert "00081155" not in not_dicom
    assert not_dicom["00081197"] == {"vr": "US", "Value": [0xC000]}
    assert not_dicom["00090010"]["Value"] == ["MEDARCHIVE 1"] and not_dicom["00091003"]["Value"] == [2]
    assert "not a DICOM file" in not_dicom["00091001"]["Value"][0] and not_dicom["00091002"]["Value"] == ["not_dicom"]
    assert conflict["00081155"]["Value"] == [sop_uid(conflicting)]
    assert conflict["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.4"]
    assert conflict["00081197"]["Value"] == [0x0111]
    assert "already stored with different content" in conflict["00091001"]["Value"][0]
    assert Instance.objects.filter(institution=inst_a).count() == 3
    assert stored_bytes(Instance.objects.get(sop_instance_uid=sop_uid(first_version))) == first_version
    event = AuditEvent.objects.filter(action="instances.store").latest("pk")
    assert event.detail["stored"] == 2 and event.detail["refused"] == 2


def test_all_parts_conflicting_answers_409(client, token_a):
    originals = [synth_bytes("CT", seed=1), synth_bytes("CT", seed=1)]
    stow(client, multipart(*originals), token=token_a)
    changed = [synth_bytes("CT", sop_uid=sop_uid(data), seed=2) for data in originals]
    response = stow(client, multipart(*changed), token=token_a)
    assert response.status_code == 409
    assert REFERENCED not in response.json()
    assert [item["00081197"]["Value"] for item in failed_items(response)] == [[0x0111], [0x0111]]
    assert Instance.objects.count() == 2


def test_all_parts_unreadable_answers_400_with_the_reasons(client, token_a, tmp_path):
    response = stow(client, multipart(b"not dicom", synth_bytes("CT")[:-500]), token=token_a)
    assert response.status_code == 400
    reasons = [item["00091001"]["Value"][0] for item in failed_items(response)]
    assert "not a DICOM file" in reasons[0] and "truncated" in reasons[1]
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []


def test_a_mixture_of_reasons_with_nothing_stored_answers_409(client, token_a):
    original = synth_bytes("CT", seed=1)
    stow(client, multipart(original), token=token_a)
    response = stow(client, multipart(b"not dicom", synth_bytes("CT", sop_uid=sop_uid(original), seed=2)), token=token_a)
    assert response.status_code == 409


def test_part_over_the_instance_size_limit_is_refused_and_not_kept_whole(client, token_a, settings, tmp_path):
    settings.DICOM_MAX_INSTANCE_BYTES = 20_000
    small, large = synth_bytes("CT", rows=32, cols=32), synth_bytes("CT", rows=256, cols=256)
    response = stow(client, multipart(small, large), token=token_a)
    assert response.status_code == 202
    (item,) = failed_items(response)
    assert item["00081155"]["Value"] == [sop_uid(large)]  # its header was kept and read
    assert item["00081197"]["Value"] == [0xA700] and "at most 20,000 bytes" in item["00091001"]["Value"][0]
    assert Instance.objects.get().sop_instance_uid == sop_uid(small)
    only_large = stow(client, multipart(large), token=token_a)
    assert only_large.status_code == 413


# --- Studies/{study} ----------------------------------------------------------------------------------------------------


def test_study_resource_stores_its_own_instances_and_refuses_others(client, token_a):
    study_uid = generate_uid()
    mine = synth_bytes("CT", study_uid=study_uid)
    other_study = synth_bytes("CT")
    response = stow(client, multipart(mine, other_study), token=token_a, path=f"/dicomweb/studies/{study_uid}")
    assert response.status_code == 202
    body = response.json()
    assert body[RETRIEVE_URL]["Value"] == [f"http://testserver/dicomweb/studies/{study_uid}"]
    assert uids(body[REFERENCED]["Value"]) == [sop_uid(mine)]
    (item,) = body[FAILED]["Value"]
    assert item["00081155"]["Value"] == [sop_uid(other_study)]
    assert item["00081197"]["Value"] == [0xA900] and item["00091002"]["Value"] == ["not_in_study"]
    assert f"not to study {study_uid}" in item["00091001"]["Value"][0]
    assert list(Instance.objects.values_list("study__study_instance_uid", flat=True)) == [study_uid]
    assert AuditEvent.objects.filter(action="instance.refused", detail__code="not_in_study").count() == 1


def test_study_resource_with_only_other_studies_instances_answers_409_and_stores_nothing(client, token_a, tmp_path):
    response = stow(client, multipart(synth_bytes("CT"), synth_bytes("MR")), token=token_a, path=f"/dicomweb/studies/{generate_uid()}")
    assert response.status_code == 409
    assert [item["00091002"]["Value"] for item in failed_items(response)] == [["not_in_study"]] * 2
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []


def test_study_resource_with_a_malformed_uid_is_400(client, token_a):
    response = stow(client, multipart(synth_bytes("CT")), token=token_a, path="/dicomweb/studies/1.2.03")
    assert response.status_code == 400 and "not a valid UID" in response.json()["error"]
    assert Instance.objects.count() == 0


# --- Requests refused as a whole: nothing stored -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, says",
    [
        ('multipart/related; type="application/dicom"; boundary=another-boundary', "does not contain the boundary"),
        ('multipart/related; type="application/dicom"', "no boundary parameter"),
    ],
)
def test_wrong_or_missing_boundary_is_400_and_stores_nothing(client, token_a, tmp_path, content_type, says):
    response = stow(client, multipart(synth_bytes("CT")), token=token_a, content_type=content_type)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert says in response.json()["error"] and response.json()["code"] == "malformed_multipart"
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []


def test_body_cut_short_after_good_parts_is_400_and_stores_none_of_them(client, token_a, tmp_path):
    body = multipart(synth_bytes("CT"), synth_bytes("MR"))
    response = stow(client, body[: len(body) - 2000], token=token_a)
    assert response.status_code == 400 and "cut short" in response.json()["error"]
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []
    assert not AuditEvent.objects.filter(action="instances.store").exists()


class BrokenConnection(io.BytesIO):
    def read(self, size=-1):
        if self.tell() > 10_000:
            raise ConnectionResetError("client went away")
        return super().read(min(size, 4096) if size and size > 0 else 4096)


def test_connection_broken_mid_body_is_400_and_stores_nothing(client, token_a, tmp_path):
    body = multipart(synth_bytes("CT"), synth_bytes("CT", rows=128, cols=128))
    response = stow(
        client, b"", token=token_a, CONTENT_TYPE=CONTENT_TYPE, CONTENT_LENGTH=str(len(body)), **{"wsgi.input": BrokenConnection(body)}
    )
    assert response.status_code == 400 and "connection broke" in response.json()["error"]
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []


@pytest.mark.parametrize(
    "content_type, says",
    [
        ("application/dicom", "multipart/related"),
        ("application/json", "multipart/related"),
        ('multipart/related; type="application/dicom+json"; boundary=' + BOUNDARY, "separate bulk data"),
        ('multipart/related; type="application/octet-stream"; boundary=' + BOUNDARY, "must be application/dicom"),
    ],
)
def test_other_media_types_are_415(client, token_a, tmp_path, content_type, says):
    response = stow(client, multipart(synth_bytes("CT")), token=token_a, content_type=content_type)
    assert response.status_code == 415
    assert says in response.json()["error"]
    assert Instance.objects.count() == 0


def test_a_part_of_another_media_type_is_415_and_stores_nothing(client, token_a, tmp_path):
    body = multipart(synth_bytes("CT"), (b"\xff\xd8\xff\xe0 a JPEG", "image/jpeg"))
    response = stow(client, body, token=token_a)
    assert response.status_code == 415
    assert "Part 2 is image/jpeg" in response.json()["error"]
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []


def test_empty_multipart_body_is_400(client, token_a):
    response = stow(client, f"--{BOUNDARY}--\r\n".encode(), token=token_a)
    assert response.status_code == 400 and response.json()["code"] == "no_instances"


def test_body_over_the_request_limit_is_413_before_it_is_read(client, token_a, settings):
    settings.DICOMWEB_MAX_REQUEST_BYTES = 10_000
    response = stow(client, multipart(synth_bytes("CT", rows=128, cols=128)), token=token_a)
    assert response.status_code == 413 and "10,000 bytes" in response.json()["error"]
    assert Instance.objects.count() == 0


@pytest.mark.parametrize("read_size", [1, 7, 100, 64 * 1024])
def test_parts_are_read_exactly_whatever_the_size_of_each_read(read_size):
    # Contents with near-delimiters: CRLF and dashes, and the boundary without its leading CRLF.
    contents = [b"\r\n--medarchive-test-7f3\r\n" * 3 + bytes(range(256)), b"", f"--{BOUNDARY}".encode() + b"\r\r\n-"]
    body = multipart(*contents)
    reader = MultipartReader(io.BytesIO(body), BOUNDARY.encode(), max_bytes=len(body), read_size=read_size)
    parts = [(part.headers, b"".join(part.chunks())) for part in reader]
    assert parts == [({"content-type": "application/dicom"}, content) for content in contents]
    with pytest.raises(MultipartError, match="larger than"):
        list(MultipartReader(io.BytesIO(body), BOUNDARY.encode(), max_bytes=len(body) - 3, read_size=read_size))


# --- Chunked bodies (no Content-Length) -----------------------------------------------------------------------------


def chunked(body: bytes, **extra) -> dict:
    """WSGI environ of a chunked request as gunicorn hands it over: de-chunked input, no CONTENT_LENGTH."""
    return {"CONTENT_TYPE": CONTENT_TYPE, "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body), **extra}


def test_chunked_body_from_a_server_that_terminates_the_input_is_stored(client, token_a):
    data = synth_bytes("CT")
    response = stow(client, b"", token=token_a, **chunked(multipart(data), **{"wsgi.input_terminated": True}))
    assert response.status_code == 200, response.content
    assert Instance.objects.get().sop_instance_uid == sop_uid(data)


def test_chunked_body_over_the_request_limit_is_413_and_stores_nothing(client, token_a, settings, tmp_path):
    settings.DICOMWEB_MAX_REQUEST_BYTES = 300_000
    body = multipart(*[synth_bytes("CT", rows=128, cols=128) for _ in range(12)])
    response = stow(client, b"", token=token_a, **chunked(body, **{"wsgi.input_terminated": True}))
    assert response.status_code == 413
    assert Instance.objects.count() == 0 and archive_files(tmp_path) == []


def test_chunked_body_on_a_server_that_cannot_read_it_is_411(client, token_a):
    response = stow(client, b"", token=token_a, **chunked(multipart(synth_bytes("CT"))))
    assert response.status_code == 411 and "Content-Length" in response.json()["error"]


# --- Who may store -------------------------------------------------------------------------------------------------------


def test_anonymous_caller_gets_401_with_a_bearer_challenge(client, db):
    response = stow(client, multipart(synth_bytes("CT")))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Instance.objects.count() == 0


def test_clinician_without_the_register_role_gets_403_naming_it(client, inst_a, principal_a):
    clinician = member(inst_a, "reader", ["receive"])
    raw = services.issue_token(actor=OPERATOR, membership=clinician, name="viewer")[1]
    response = stow(client, multipart(synth_bytes("CT")), token=raw)
    assert response.status_code == 403
    assert "Register images" in response.json()["error"]
    assert Instance.objects.count() == 0


@pytest.mark.parametrize("how", ["expired", "revoked"])
def test_expired_or_revoked_token_gets_401(client, admin_a, principal_a, how):
    token, raw = services.issue_token(actor=principal_a, membership=admin_a, name="old")
    if how == "expired":
        token.expires_at = timezone.now() - timedelta(minutes=1)
        token.save()
    else:
        services.revoke_token(actor=principal_a, token=token)
    response = stow(client, multipart(synth_bytes("CT")), token=raw)
    assert response.status_code == 401 and how in response.json()["error"]
    assert Instance.objects.count() == 0


def test_each_institution_stores_into_its_own_archive(client, token_a, token_b, inst_a, inst_b):
    data = synth_bytes("CT")
    for token in (token_a, token_b):
        assert stow(client, multipart(data), token=token).status_code == 200
    a, b = (Instance.objects.select_related("study").get(institution=inst, sop_instance_uid=sop_uid(data)) for inst in (inst_a, inst_b))
    assert a.pk != b.pk and a.study_id != b.study_id and a.storage_name != b.storage_name
    assert a.study.institution_id == inst_a.pk and b.study.institution_id == inst_b.pk


def test_portal_session_needs_the_csrf_token(admin_a):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_a.user, backend="django.contrib.auth.backends.ModelBackend")
    refused = stow(browser, multipart(synth_bytes("CT")))
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    browser.get("/")  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    allowed = stow(browser, multipart(synth_bytes("CT")), HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200, allowed.content
    assert Instance.objects.count() == 1


# --- Content negotiation and other methods ---------------------------------------------------------------------------


def test_accept_application_json_gets_the_same_answer_as_plain_json(client, token_a):
    response = stow(client, multipart(synth_bytes("CT")), token=token_a, HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert REFERENCED in response.json()


def test_accept_of_only_dicom_xml_is_406_and_stores_nothing(client, token_a):
    response = stow(client, multipart(synth_bytes("CT")), token=token_a, HTTP_ACCEPT="application/dicom+xml")
    assert response.status_code == 406
    assert Instance.objects.count() == 0


def test_other_methods_on_studies_do_not_fail(client, token_a):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token_a}"}
    put = client.put("/dicomweb/studies", **auth)
    assert put.status_code == 405 and "POST" in put["Allow"] and "GET" in put["Allow"]
    assert client.options("/dicomweb/studies", **auth).status_code == 200


# --- Streaming ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_large_body_is_streamed_not_held_in_memory(client, token_a, tmp_path):
    instances = [to_bytes(make_dataset("CT", rows=512, cols=512, frames=12, instance_number=i)) for i in range(5)]
    instance_size = min(len(data) for data in instances)
    body_path = tmp_path / "body"
    body_path.write_bytes(multipart(*instances))
    size = body_path.stat().st_size
    assert size > 30 * 1024 * 1024
    del instances
    # A first small request imports and initialises everything lazily loaded, which is not what is measured here.
    assert stow(client, multipart(synth_bytes("CT")), token=token_a).status_code == 200
    with open(body_path, "rb") as body:
        tracemalloc.start()
        try:
            response = stow(client, b"", token=token_a, CONTENT_TYPE=CONTENT_TYPE, CONTENT_LENGTH=str(size), **{"wsgi.input": body})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 200, response.content
    assert len(response.json()[REFERENCED]["Value"]) == 5
    assert Instance.objects.filter(number_of_frames=12).count() == 5
    # Neither the body nor even one whole instance was ever held in memory.
    assert peak < size / 4 and peak < instance_size, f"peak Python memory {peak:,} bytes for a {size:,} byte body"


# --- A real third-party client -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dicomweb_client_stores_instances_that_then_appear_in_the_index(live_server, inst_a, admin_a, principal_a):
    from dicomweb_client.api import DICOMwebClient

    raw = services.issue_token(actor=principal_a, membership=admin_a, name="dicomweb-client")[1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    client = DICOMwebClient(url=live_server.url + "/dicomweb", session=session)
    study_uid, series_uid = generate_uid(), generate_uid()
    # As read from files: the client writes each dataset as it is, so one built in memory would lack the Part 10
    # preamble and be refused as not a DICOM file.
    datasets = [read_back(make_dataset("CT", study_uid=study_uid, series_uid=series_uid, instance_number=i)) for i in (1, 2, 3)]

    answer = client.store_instances(datasets=datasets)

    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [ds.SOPInstanceUID for ds in datasets]
    # Absolute URLs follow the Host header, which this client sends without the port.
    assert answer.RetrieveURL == f"http://localhost/dicomweb/studies/{study_uid}"
    study = Study.objects.get(institution=inst_a, study_instance_uid=study_uid)
    assert study.number_of_instances == 3
    assert set(Instance.objects.filter(study=study).values_list("source", flat=True)) == {"stow-rs"}

    # To the study resource, with one instance of another study: that one fails with its reason, readable by the client.
    stray, more = (
        read_back(make_dataset("MR")),
        read_back(make_dataset("CT", study_uid=study_uid, series_uid=series_uid, instance_number=4)),
    )
    answer = client.store_instances(datasets=[more, stray], study_instance_uid=study_uid)

    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [more.SOPInstanceUID]
    (failed,) = answer.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == stray.SOPInstanceUID and failed.FailureReason == 0xA900
    assert "named in the request URL" in failed[0x00091001].value
    assert Study.objects.get(pk=study.pk).number_of_instances == 4
    assert not Instance.objects.filter(sop_instance_uid=stray.SOPInstanceUID).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_chunked_request_through_gunicorn_is_stored(inst_a, admin_a, principal_a, celery_broker_dir, tmp_path):
    """Django's own test server cannot read a chunked body; gunicorn, the production web server, de-chunks it."""
    from dicomweb_client.api import DICOMwebClient

    port = free_port()
    env = worker_environment(celery_broker_dir)
    env["ARCHIVE_ROOT"] = str(tmp_path / "archive")  # where this test's own storage looks (conftest)
    argv = [sys.executable, "-m", "gunicorn", "medarchive.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket"]
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_until(lambda: accepts_connections(port), timeout=30, failure=lambda: f"gunicorn did not start:\n{tail(log_path)}")
        raw = services.issue_token(actor=principal_a, membership=admin_a, name="dicomweb-client")[1]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {raw}"
        client = DICOMwebClient(url=f"http://127.0.0.1:{port}/dicomweb", session=session)
        client.set_chunk_size(256 * 1024)  # the client sends bodies larger than this with Transfer-Encoding: chunked
        datasets = [read_back(make_dataset("CT", rows=512, cols=512, frames=2, instance_number=i)) for i in (1, 2, 3)]

        answer = client.store_instances(datasets=datasets)

        assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [ds.SOPInstanceUID for ds in datasets]
        for ds in datasets:
            instance = Instance.objects.get(institution=inst_a, sop_instance_uid=ds.SOPInstanceUID)
            assert stored_bytes(instance) == to_bytes(ds)
    finally:
        stop_process_group(server)
