"""Browser upload: the page, the endpoint its script posts each file or zip to, and the zip safety rules behind it."""

import io
import struct
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from images.ingest import bulk
from images.models import Instance
from subscribers.models import AuditEvent
from tests.conftest import login, stored_files
from tests.dicom_files import BUNDLED, bundled_bytes, bundled_path, synth_bytes

JSON = {"accept": "application/json"}


def upload(client, name, data, headers=JSON, **extra):
    return client.post(
        reverse("upload-file"), {"file": SimpleUploadedFile(name.rsplit("/", 1)[-1], data), "name": name, **extra}, headers=headers
    )


def zip_of(entries: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def nothing_stored(tmp_path):
    assert Instance.objects.count() == 0
    assert not (tmp_path / "archive").exists() or stored_files(tmp_path / "archive") == []


@pytest.fixture
def upload_tmp(settings, tmp_path):
    """Django's upload files and our zip entries go to a folder of the test, to check nothing stays behind."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


# --- The page -------------------------------------------------------------------------------------


def test_upload_page_offers_files_folder_and_drop_zone_to_a_register_member(client_a):
    response = client_a.get(reverse("upload"))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<input id="upload-files" type="file" name="file" multiple' in html
    assert 'id="upload-folder" type="file" name="file" webkitdirectory multiple' in html
    assert '<label for="upload-files">' in html and '<label for="upload-folder">' in html
    assert '<button type="button" id="upload-drop" class="dropzone"' in html
    assert 'aria-live="polite"' in html and "js/upload.js" in html and "csrfmiddlewaretoken" in html
    assert f'action="{reverse("upload-file")}"' in html  # the plain form posts to the same endpoint


def test_upload_page_is_403_without_the_register_role(client, clinician_a):
    response = login(client, clinician_a.user).get(reverse("upload"))
    assert response.status_code == 403
    assert "Register images" in response.content.decode()


def test_upload_page_sends_anonymous_visitors_to_log_in(client, db):
    response = client.get(reverse("upload"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


# --- One file --------------------------------------------------------------------------------------


def test_real_ct_file_is_stored_and_indexed(client_a, inst_a):
    data = bundled_bytes(BUNDLED["CT"])
    response = upload(client_a, "CT_small.dcm", data)
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "stored" and body["name"] == "CT_small.dcm" and body["reason"] == ""
    instance = Instance.objects.select_related("study").get(sop_instance_uid=body["sop_instance_uid"])
    assert instance.institution == inst_a and instance.source == "upload" and instance.size_bytes == len(data)
    assert body["study_instance_uid"] == instance.study.study_instance_uid
    event = AuditEvent.objects.get(action="instances.store")
    assert event.detail["stored"] == 1 and event.actor == "admin_a" and event.client_address == "127.0.0.1"


def test_same_file_again_is_already_stored(client_a):
    data = bundled_bytes(BUNDLED["MR"])
    first = upload(client_a, "MR_small.dcm", data).json()
    again = upload(client_a, "MR_small.dcm", data)
    assert again.status_code == 200 and again.json()["status"] == "already_stored"
    assert again.json()["sop_instance_uid"] == first["sop_instance_uid"]
    assert Instance.objects.count() == 1


def test_file_over_the_memory_threshold_is_read_from_djangos_temporary_file(client_a, settings, upload_tmp, monkeypatch):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    seen = {}
    real = bulk.ingest_file

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(bulk, "ingest_file", spy)
    response = upload(client_a, "series/ct-1.dcm", synth_bytes("CT"))
    assert response.status_code == 200 and response.json()["status"] == "stored"
    assert response.json()["name"] == "series/ct-1.dcm"  # the path inside the chosen folder, for display
    assert str(seen["path"]).startswith(str(upload_tmp)) and "fileobj" not in seen


def test_non_dicom_file_is_refused_with_400_and_the_reason(client_a, tmp_path):
    response = upload(client_a, "README.txt", b"Patient CD, burned 2026-11-02\n" * 10)
    body = response.json()
    assert response.status_code == 400
    assert body["status"] == "refused" and body["code"] == "not_dicom" and "not a DICOM file" in body["reason"]
    nothing_stored(tmp_path)
    refusal = AuditEvent.objects.get(action="instance.refused")
    assert refusal.detail["name"] == "README.txt" and refusal.detail["source"] == "upload"


def test_dicomdir_is_refused_as_the_index_of_a_disc(client_a, tmp_path):
    with open(bundled_path("DICOMDIR"), "rb") as fh:
        response = upload(client_a, "DICOMDIR", fh.read())
    assert response.status_code == 400 and "DICOMDIR" in response.json()["reason"]
    nothing_stored(tmp_path)


def test_different_file_under_a_known_uid_answers_409(client_a):
    upload(client_a, "a.dcm", synth_bytes("CT", sop_uid="1.2.826.0.1.3680043.8.498.1", seed=1))
    response = upload(client_a, "b.dcm", synth_bytes("CT", sop_uid="1.2.826.0.1.3680043.8.498.1", seed=2))
    assert response.status_code == 409 and response.json()["code"] == "conflict"


def test_member_without_register_role_gets_403_and_nothing_is_stored(client, clinician_a, tmp_path):
    response = upload(login(client, clinician_a.user), "ct.dcm", synth_bytes("CT"))
    assert response.status_code == 403
    assert response.json()["status"] == "refused" and "Register images" in response.json()["reason"]
    nothing_stored(tmp_path)
    assert AuditEvent.objects.get(action="instance.refused").outcome == "denied"


def test_anonymous_script_is_told_to_log_in_again(client, db, tmp_path):
    response = upload(client, "ct.dcm", synth_bytes("CT"))
    assert response.status_code == 401 and "log in again" in response.json()["reason"]
    nothing_stored(tmp_path)


def test_script_posting_with_the_csrf_header_is_accepted_and_without_it_refused(admin_a):
    client = login(Client(enforce_csrf_checks=True), admin_a.user)
    client.get(reverse("upload"))
    token = client.cookies["csrftoken"].value
    assert upload(client, "ct.dcm", synth_bytes("CT")).status_code == 403
    response = upload(client, "ct.dcm", synth_bytes("CT"), headers={**JSON, "X-CSRFToken": token})
    assert response.status_code == 200 and response.json()["status"] == "stored"


def test_form_posted_without_javascript_shows_a_result_page_for_each_file(client_a):
    files = [SimpleUploadedFile("one.dcm", synth_bytes("CT")), SimpleUploadedFile("notes.txt", b"not an image")]
    response = client_a.post(reverse("upload-file"), {"file": files})
    html = response.content.decode()
    assert response.status_code == 200 and "text/html" in response["Content-Type"]
    assert "one.dcm" in html and "stored" in html and "notes.txt" in html and "not a DICOM file" in html
    assert Instance.objects.count() == 1


# --- Zips ------------------------------------------------------------------------------------------


def test_zip_stores_good_files_and_refuses_readme_and_unsafe_names_without_writing_them(client_a, tmp_path, upload_tmp, monkeypatch):
    monkeypatch.chdir(upload_tmp)
    good = {f"study/ct-{i}.dcm": synth_bytes("CT", instance_number=i + 1) for i in range(3)}
    evil = synth_bytes("CT")  # a valid image: refused for its name alone
    data = zip_of({**good, "README.txt": b"read me", "../evil.dcm": evil, "/abs.dcm": evil})
    response = upload(client_a, "export.zip", data)
    body = response.json()
    assert response.status_code == 200
    assert body["kind"] == "zip" and body["status"] == "stored"
    assert body["counts"] == {"stored": 3, "already_stored": 0, "replaced": 0, "refused": 3}
    assert body["summary"] == "6 files: 3 stored, 3 refused"
    reasons = {entry["name"]: entry["reason"] for entry in body["refused"]}
    assert set(reasons) == {"README.txt", "../evil.dcm", "/abs.dcm"}
    assert "not a DICOM file" in reasons["README.txt"]
    assert "unsafe name" in reasons["../evil.dcm"].lower() and "unsafe name" in reasons["/abs.dcm"].lower()
    assert Instance.objects.count() == 3 and len(stored_files(tmp_path / "archive")) == 3
    # Nothing was unpacked under the entry names: not beside the test folders, not in the working directory.
    assert list(tmp_path.parent.rglob("evil.dcm")) == [] and list(tmp_path.parent.rglob("abs.dcm")) == []
    assert stored_files(upload_tmp) == []  # every temporary file is gone
    batch = AuditEvent.objects.get(action="instances.store")
    assert batch.detail["stored"] == 3 and batch.detail["refused"] == 3
    assert set(AuditEvent.objects.filter(action="instance.refused").values_list("detail__name", flat=True)) == set(reasons)


def test_same_zip_twice_is_already_stored(client_a):
    data = zip_of({f"ct-{i}.dcm": synth_bytes("CT", instance_number=i + 1) for i in range(2)})
    upload(client_a, "export.zip", data)
    response = upload(client_a, "export.zip", data)
    assert response.status_code == 200 and response.json()["status"] == "already_stored"
    assert response.json()["counts"]["already_stored"] == 2


def test_zip_without_the_zip_extension_is_recognised_by_its_signature(client_a):
    response = upload(client_a, "export", zip_of({"ct.dcm": synth_bytes("CT")}))
    assert response.status_code == 200 and response.json()["kind"] == "zip"


def test_nested_zip_and_macos_metadata_are_listed_not_unpacked(client_a):
    inner = zip_of({"ct.dcm": synth_bytes("CT")})
    response = upload(client_a, "outer.zip", zip_of({"inner.zip": inner, "__MACOSX/._ct.dcm": b"\0\5\26\7"}))
    body = response.json()
    assert response.status_code == 400 and body["status"] == "refused"
    reasons = {entry["name"]: entry["reason"] for entry in body["refused"]}
    assert "not unpacked" in reasons["inner.zip"] and "macOS" in reasons["__MACOSX/._ct.dcm"]
    assert Instance.objects.count() == 0


def test_zip_bomb_entry_is_refused_by_its_compression_ratio_and_nothing_is_stored(client_a, tmp_path, upload_tmp):
    bomb = zip_of({"scan.dcm": bytes(20 * 1024 * 1024)})  # 20 MB of zeros in about 20 kB
    response = upload(client_a, "scans.zip", bomb)
    body = response.json()
    assert response.status_code == 413
    assert body["status"] == "refused" and body["code"] == "zip_bomb"
    assert "zip bomb" in body["reason"] and "expands" in body["reason"]
    nothing_stored(tmp_path)
    assert stored_files(upload_tmp) == []


def test_zip_expanding_beyond_the_limit_is_refused_before_unpacking(client_a, settings, tmp_path):
    settings.UPLOAD_MAX_UNCOMPRESSED_BYTES = 10_000
    response = upload(client_a, "big.zip", zip_of({f"ct-{i}.dcm": synth_bytes("CT") for i in range(3)}))
    assert response.status_code == 413
    assert response.json()["code"] == "zip_bomb" and "unpacks at most 10,000 bytes per zip" in response.json()["reason"]
    nothing_stored(tmp_path)


def test_zip_with_too_many_entries_is_refused(client_a, monkeypatch, tmp_path):
    monkeypatch.setattr(bulk, "ZIP_MAX_ENTRIES", 2)
    response = upload(client_a, "many.zip", zip_of({f"{i}.dcm": synth_bytes("CT") for i in range(3)}))
    assert response.status_code == 400 and "at most 2 per zip" in response.json()["reason"]
    nothing_stored(tmp_path)


def _shrink_declared_size(data: bytes, size: int) -> bytes:
    """The zip with its one entry's uncompressed size rewritten to `size` in both headers (a lying zip)."""
    raw = bytearray(data)
    local = raw.index(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, size)
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, size)
    return bytes(raw)


def test_entry_producing_more_than_its_header_declares_is_refused(client_a, tmp_path):
    lying = _shrink_declared_size(zip_of({"scan.dcm": bytes(20 * 1024 * 1024)}), 4096)
    response = upload(client_a, "scans.zip", lying)
    assert response.status_code == 400 and "damaged" in response.json()["refused"][0]["reason"]
    nothing_stored(tmp_path)


def test_bytes_really_unpacked_are_counted_even_when_headers_pass(client_a, settings, monkeypatch):
    files = {f"ct-{i}.dcm": synth_bytes("CT", instance_number=i + 1) for i in range(3)}
    settings.UPLOAD_MAX_UNCOMPRESSED_BYTES = len(files["ct-0.dcm"]) + 100
    monkeypatch.setattr(bulk, "_check_declared", lambda infos: None)  # as if the headers had under-declared
    body = upload(client_a, "export.zip", zip_of(files)).json()
    assert body["counts"]["stored"] == 1 and body["counts"]["refused"] == 2
    assert "expands to more than" in body["refused"][0]["reason"] and "limit was reached" in body["refused"][1]["reason"]
    assert Instance.objects.count() == 1


def test_damaged_zip_is_refused_whole(client_a, tmp_path):
    response = upload(client_a, "export.zip", b"PK\x03\x04 this is not really a zip")
    assert response.status_code == 400 and "not a readable zip" in response.json()["reason"]
    nothing_stored(tmp_path)


@pytest.mark.parametrize(
    "name, unsafe",
    [
        ("study/ct.dcm", False),
        ("dir\\ct.dcm", False),
        ("a..b.dcm", False),
        ("../evil.dcm", True),
        ("study/../../evil.dcm", True),
        ("/abs.dcm", True),
        ("..\\evil.dcm", True),
        ("study\\..\\..\\evil.dcm", True),
        ("\\server\\share\\x.dcm", True),
        ("C:\\Windows\\x.dcm", True),
        ("c:x.dcm", True),
        ("ct\x00.dcm", True),
        ("", True),
    ],
)
def test_unsafe_entry_names(name, unsafe):
    assert bulk.unsafe_entry_name(name) is unsafe
