"""Storage conditions enforced on real ingested instances: lossless compression at rest that decodes to the same
pixels (and still delivers them), deletion past retention unless held or kept, immutability, audited changes, and the
data-stored state each run records."""

import hashlib
import io
import json
from datetime import date, timedelta

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.utils import timezone
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless
from pynetdicom.sop_class import CTImageStorage

from images.ingest import ingest_instance
from images.models import ArchivePolicy, Instance, LegalHold, Patient, Series, StorageSnapshot, Study
from images.storage_conditions import enforcement
from images.storage_conditions.services import (
    DeletionRefused,
    delete_study,
    lift_legal_hold,
    place_legal_hold,
    remove_storage_condition,
    save_storage_condition,
)
from subscribers import services
from subscribers.access import RoleRequired
from subscribers.models import AuditEvent
from tests.dicom_files import COMPRESSED, bundled_path, make_dataset, series, synth_bytes, to_bytes
from tests.factories import member, principal_of
from tests.images.test_dimse_qr import _c_get, caller, identifier, listener  # noqa: F401 (fixtures)
from tests.images.test_dimse_store import with_new_uid
from tests.images.test_wado import body, only_part
from tests.storage_backends import archive_names, s3_endpoint, use_s3_archive  # noqa: F401 (fixture)

OLD = date(2010, 3, 15)  # a study date well past a 10-year retention


def store(principal, data: bytes) -> Instance:
    return ingest_instance(principal=principal, data=data, source="test").instance


def store_series(principal, modality="CT", count=2, **kwargs) -> list[Instance]:
    return [store(principal, data) for data in series(modality, count, rows=128, cols=128, **kwargs)]


def conditions(principal, modality="", **values) -> None:
    values = {
        "retention_years": None,
        "retention_from": "study_date",
        "at_retention_end": "keep_flag",
        "compression": "",
        "immutable": False,
        "required_backup_copies": 0,
        **values,
    }
    save_storage_condition(principal=principal, institution=principal.institution, modality=modality, **values)


@pytest.fixture
def run(django_capture_on_commit_callbacks, inst_a):
    """One enforcement run, with the work it leaves for after the commit (deleting old files) done as in production."""

    def run(institution=inst_a, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return enforcement.enforce(institution=institution, trigger="test", **kwargs)

    return run


def stored_bytes(instance: Instance) -> bytes:
    with storages["archive"].open(instance.storage_name) as fh:
        return fh.read()


def pixels(data: bytes) -> np.ndarray:
    return dcmread(io.BytesIO(data)).pixel_array


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- Compression at rest ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("target", [JPEG2000Lossless, JPEGLSLossless])
def test_compression_saves_bytes_and_decodes_to_the_identical_pixels(request, settings, principal_a, run, target, backend):
    if backend == "s3":
        use_s3_archive(settings, request.getfixturevalue("s3_endpoint"))
    originals = {}
    for data in series("CT", 2, rows=128, cols=128) + series("MR", 1, rows=96, cols=80, frames=3):
        originals[store(principal_a, data).sop_instance_uid] = data
    old_names = set(archive_names())
    conditions(principal_a, compression=target)

    report = run()

    assert report.instances_compressed == 3
    for instance in Instance.objects.all():
        original = originals[instance.sop_instance_uid]
        data = stored_bytes(instance)
        assert instance.transfer_syntax_uid == target and dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == target
        assert instance.original_transfer_syntax_uid == ExplicitVRLittleEndian
        assert instance.original_size_bytes == len(original) and instance.original_sha256 == hashlib.sha256(original).hexdigest()
        assert instance.size_bytes == len(data) < len(original)
        assert instance.sha256 == hashlib.sha256(data).hexdigest()
        assert np.array_equal(pixels(data), pixels(original))
    # The files as received are gone; only the compressed ones are left.
    assert not old_names & set(archive_names())
    assert sorted(archive_names()) == sorted(Instance.objects.values_list("storage_name", flat=True))
    compressed = events("instance.compress")
    assert {e.object_id for e in compressed} == set(originals)
    assert {(e.detail["transfer_syntax_from"], e.detail["transfer_syntax_to"]) for e in compressed} == {(ExplicitVRLittleEndian, target)}
    # The state the run recorded: counted in instances, measured in bytes as received and as they are stored now.
    snapshot = StorageSnapshot.objects.get()
    received, stored = sum(map(len, originals.values())), sum(len(stored_bytes(i)) for i in Instance.objects.all())
    assert (snapshot.status, snapshot.instances, snapshot.instances_compressed_total) == ("done", 3, 3)
    assert (snapshot.bytes_received, snapshot.bytes_stored, snapshot.bytes_saved) == (received, stored, received - stored)
    assert snapshot.bytes_saved_by_run == received - stored > 0
    assert (snapshot.instances_to_check, snapshot.instances_checked) == (3, 3)


def test_wado_rs_still_delivers_the_original_pixels_of_a_compressed_instance(client, admin_a, principal_a, run):
    token = services.issue_token(actor=principal_a, membership=admin_a, name="viewer")[1]
    original = synth_bytes("CT", rows=128, cols=128, frames=2)
    instance = store(principal_a, original)
    conditions(principal_a, compression=JPEG2000Lossless)
    run()
    instance.refresh_from_db()
    url = f"/dicomweb/studies/{instance.study.study_instance_uid}/series/{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    default = client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"', **auth)
    as_stored = client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*', **auth)
    metadata = client.get(f"{url}/metadata", **auth)

    for response, syntax in ((default, ExplicitVRLittleEndian), (as_stored, JPEG2000Lossless)):
        assert response.status_code == 200
        _, received = only_part(response)
        ds = dcmread(io.BytesIO(received))
        assert ds.file_meta.TransferSyntaxUID == syntax and ds.SOPInstanceUID == instance.sop_instance_uid
        assert np.array_equal(ds.pixel_array, pixels(original))
    assert json.loads(body(metadata))[0]["00083002"]["Value"] == [JPEG2000Lossless]  # Available Transfer Syntax UID


@pytest.mark.django_db(transaction=True)
def test_c_get_still_delivers_the_original_pixels_of_a_compressed_study(listener, caller, principal_a, run):  # noqa: F811
    originals = {}
    for data in series("CT", 2, rows=128, cols=128):
        originals[store(principal_a, data).sop_instance_uid] = data
    study = Instance.objects.first().study
    conditions(principal_a, compression=JPEGLSLossless)
    run()
    query = identifier("STUDY", StudyInstanceUID=study.study_instance_uid)

    # One caller takes the stored JPEG-LS, another only Explicit VR Little Endian: converted back on the way out.
    as_stored, got_stored, _ = _c_get(listener, query, storage=((CTImageStorage, JPEGLSLossless),))
    converted, got_converted, _ = _c_get(listener, query, storage=((CTImageStorage, ExplicitVRLittleEndian),))

    assert as_stored[-1].Status == converted[-1].Status == 0x0000
    for received, syntax in ((got_stored, JPEGLSLossless), (got_converted, ExplicitVRLittleEndian)):
        assert {ds.SOPInstanceUID for ds in received} == set(originals)
        for ds in received:
            assert ds.file_meta.TransferSyntaxUID == syntax
            assert np.array_equal(ds.pixel_array, pixels(originals[ds.SOPInstanceUID]))


def test_a_replaced_instance_forgets_the_compression_of_the_one_it_replaces(inst_a, principal_a, run):
    ArchivePolicy.objects.create(institution=inst_a, on_conflict=ArchivePolicy.OnConflict.KEEP_NEWEST)
    first = make_dataset("CT", rows=128, cols=128)
    store(principal_a, to_bytes(first))
    conditions(principal_a, compression=JPEG2000Lossless)
    run()
    conditions(principal_a, compression="")
    first.StudyDescription = "Corrected"
    newer = to_bytes(first)

    result = ingest_instance(principal=principal_a, data=newer, source="test")

    replaced = Instance.objects.get()
    assert result.status == "replaced" and stored_bytes(replaced) == newer
    assert (replaced.transfer_syntax_uid, replaced.original_transfer_syntax_uid, replaced.original_size_bytes) == (
        ExplicitVRLittleEndian,
        "",
        None,
    )
    assert replaced.compressed_at is None and replaced.size_as_received == len(newer)


def test_compressed_or_lossy_files_are_left_as_received(principal_a, run):
    # pydicom's MR_small in three compressed syntaxes (one SOP Instance UID: each gets its own), a lossy JPEG, a JPEG 2000.
    kept = [
        store(principal_a, with_new_uid(bundled_path(COMPRESSED[name])))
        for name in ("rle", "jpeg2000_lossless", "jpeg_ls_lossless", "jpeg_baseline", "jpeg2000_ct")
    ]
    # Uncompressed, but decompressed from a lossy original (PS3.3 C.7.6.1.1.5); and deflated.
    once_lossy = make_dataset("CT", rows=64, cols=64)
    once_lossy.LossyImageCompression = "01"
    kept.append(store(principal_a, to_bytes(once_lossy)))
    deflated = make_dataset("CT", rows=64, cols=64)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    kept.append(store(principal_a, to_bytes(deflated)))
    before = {i.pk: (i.sha256, i.storage_name, i.transfer_syntax_uid, stored_bytes(i)) for i in kept}
    conditions(principal_a, compression=JPEGLSLossless)

    report = run()

    assert report.instances_compressed == 0 and events("instance.compress") == []
    after = {i.pk: (i.sha256, i.storage_name, i.transfer_syntax_uid, stored_bytes(i)) for i in Instance.objects.all()}
    assert after == before
    assert Instance.objects.filter(original_transfer_syntax_uid="").count() == len(kept)
    assert StorageSnapshot.objects.get().bytes_saved == 0


def test_a_file_whose_re_encoding_would_not_keep_every_stored_bit_is_kept_as_received(principal_a, run):
    ds = make_dataset("CT", rows=64, cols=64)  # 12 of 16 bits stored
    words = ds.pixel_array.copy()
    words[0, :8] |= 0x8000  # a retired embedded overlay in the top bit: decoders mask it off, an encoder drops it
    ds.PixelData = words.tobytes()
    instance = store(principal_a, to_bytes(ds))
    conditions(principal_a, compression=JPEG2000Lossless)

    first, second = run(), run()

    assert "bits above Bits Stored hold data" in first.problems[0] and second.problems == []  # found once, not tried again
    kept = Instance.objects.get()
    assert (kept.sha256, kept.transfer_syntax_uid, kept.original_transfer_syntax_uid) == (instance.sha256, ExplicitVRLittleEndian, "")
    assert stored_bytes(kept) == to_bytes(ds) and events("instance.compress") == []


@pytest.mark.parametrize("target", [JPEG2000Lossless, JPEGLSLossless])
def test_a_big_endian_file_is_compressed_to_the_same_pixels(principal_a, run, target):
    original = with_new_uid(bundled_path(COMPRESSED["big_endian"]))
    instance = store(principal_a, original)
    assert instance.transfer_syntax_uid == ExplicitVRBigEndian
    conditions(principal_a, compression=target)

    run()

    instance.refresh_from_db()
    assert (instance.original_transfer_syntax_uid, instance.transfer_syntax_uid) == (ExplicitVRBigEndian, target)
    assert np.array_equal(pixels(stored_bytes(instance)), pixels(original))


def test_a_modality_row_replaces_the_default_for_its_series(principal_a, run):
    ct = store_series(principal_a, "CT", 1)[0]
    mr = store_series(principal_a, "MR", 1)[0]
    conditions(principal_a, compression="")
    conditions(principal_a, "MR", compression=JPEGLSLossless)

    run()

    ct.refresh_from_db()
    mr.refresh_from_db()
    assert (ct.transfer_syntax_uid, mr.transfer_syntax_uid) == (ExplicitVRLittleEndian, JPEGLSLossless)


def test_the_original_sent_again_is_already_stored_after_compression(principal_a, run):
    original = synth_bytes("CT", rows=128, cols=128)
    store(principal_a, original)
    conditions(principal_a, compression=JPEG2000Lossless)
    run()

    again = ingest_instance(principal=principal_a, data=original, source="test")

    assert again.status == "already_stored" and again.instance.transfer_syntax_uid == JPEG2000Lossless


def test_a_stored_file_that_no_longer_matches_its_hash_is_not_compressed(principal_a, run):
    instance = store_series(principal_a, "CT", 1)[0]
    damaged = bytearray(stored_bytes(instance))
    damaged[-10] ^= 0xFF
    storages["archive"].delete(instance.storage_name)
    storages["archive"].save(instance.storage_name, io.BytesIO(bytes(damaged)))
    conditions(principal_a, compression=JPEG2000Lossless)

    report = run()

    instance.refresh_from_db()
    assert instance.transfer_syntax_uid == ExplicitVRLittleEndian and stored_bytes(instance) == bytes(damaged)
    assert report.instances_compressed == 0 and "does not match its SHA-256" in report.problems[0]
    assert "does not match its SHA-256" in StorageSnapshot.objects.get().problems[0]


def test_a_second_run_finds_nothing_left_to_do(principal_a, run):
    store_series(principal_a, "CT", 2)
    store_series(principal_a, "CT", 1, study_date=OLD, patient_id="OLD-1")
    conditions(principal_a, compression=JPEG2000Lossless, retention_years=10, at_retention_end="delete")
    first = run()
    stored = sorted(Instance.objects.values_list("sha256", flat=True))

    second = run()

    assert (first.studies_deleted, first.instances_compressed) == (1, 2)
    assert (second.studies_deleted, second.instances_compressed) == (0, 0)
    assert sorted(Instance.objects.values_list("sha256", flat=True)) == stored
    assert StorageSnapshot.objects.filter(status="done").count() == 2


def test_a_run_does_nothing_while_another_of_the_same_institution_is_under_way(inst_a, principal_a, run):
    store_series(principal_a, "CT", 1, study_date=OLD)
    conditions(principal_a, retention_years=10, at_retention_end="delete")
    StorageSnapshot.objects.create(institution=inst_a, trigger="schedule")  # running

    report = run()

    assert report.skipped_reason and Study.objects.count() == 1


def test_a_run_left_running_by_a_dead_worker_is_marked_failed_by_the_next(inst_a, principal_a, run):
    stale = StorageSnapshot.objects.create(institution=inst_a, trigger="schedule")
    StorageSnapshot.objects.filter(pk=stale.pk).update(progress_at=timezone.now() - timedelta(hours=3))

    run()

    stale.refresh_from_db()
    assert stale.status == "failed" and "Interrupted" in stale.error
    assert StorageSnapshot.objects.filter(status="done").count() == 1


# --- Retention and deletion ------------------------------------------------------------------------------------------


def test_a_study_past_retention_is_deleted_with_its_files_and_rows(principal_a, run):
    old = store_series(principal_a, "CT", 2, study_date=OLD, patient_id="PAT-1")
    recent = store_series(principal_a, "CT", 1, study_date=timezone.localdate(), patient_id="PAT-1")
    lone = store_series(principal_a, "MR", 1, study_date=OLD, patient_id="PAT-2")
    old_study, old_files = old[0].study, {i.storage_name for i in old + lone}
    conditions(principal_a, retention_years=10, at_retention_end="delete")

    report = run()

    assert report.studies_deleted == 2 and report.instances_deleted == 3
    assert not Study.objects.filter(pk__in=[old_study.pk, lone[0].study_id]).exists()
    assert not Series.objects.filter(study_id__in=[old_study.pk, lone[0].study_id]).exists()
    assert Instance.objects.count() == 1 and Instance.objects.get().pk == recent[0].pk
    # PAT-1 keeps its recent study; PAT-2 had nothing else and goes with its study.
    assert list(Patient.objects.values_list("patient_id", flat=True)) == ["PAT-1"]
    assert not old_files & set(archive_names()) and recent[0].storage_name in archive_names()
    deleted = {e.object_id: e for e in events("study.delete")}
    assert set(deleted) == {old_study.study_instance_uid, lone[0].study.study_instance_uid}
    event = deleted[old_study.study_instance_uid]
    assert (event.outcome, event.detail["instances"], event.detail["patient_deleted"]) == ("success", 2, False)
    assert "retention ended on 2020-03-15" in event.detail["reason"] and event.actor == "operator (command line)"
    snapshot = StorageSnapshot.objects.get()
    assert (snapshot.studies_deleted, snapshot.instances_deleted, snapshot.studies, snapshot.instances) == (2, 3, 1, 1)
    assert snapshot.bytes_deleted == sum(i.size_bytes for i in old + lone)


@pytest.mark.parametrize("on", ["study", "patient"])
def test_a_held_study_is_kept_past_retention_until_the_hold_is_lifted(inst_a, principal_a, run, on):
    instances = store_series(principal_a, "CT", 1, study_date=OLD, patient_id="HELD-1")
    study = instances[0].study
    conditions(principal_a, retention_years=10, at_retention_end="delete")
    subject = {"study_instance_uid": study.study_instance_uid} if on == "study" else {"patient_id": "HELD-1"}
    hold = place_legal_hold(principal=principal_a, institution=inst_a, reason="Case 2026-17, court order", **subject)

    held_run = run()

    assert Study.objects.filter(pk=study.pk).exists() and instances[0].storage_name in archive_names()
    assert held_run.studies_deleted == 0
    snapshot = StorageSnapshot.objects.get()
    assert (snapshot.studies_due_for_deletion, snapshot.studies_held) == (1, 1)
    with pytest.raises(DeletionRefused, match="legal hold"):
        delete_study(principal=principal_a, study=study, reason="tidy up")

    lift_legal_hold(principal=principal_a, hold=hold, reason="Case closed")
    lifted_run = run()

    assert lifted_run.studies_deleted == 1 and not Study.objects.filter(pk=study.pk).exists()
    assert instances[0].storage_name not in archive_names()
    hold.refresh_from_db()
    assert (hold.placed_by_name, hold.reason, hold.lifted_by_name, hold.lift_reason) == (
        "admin_a",
        "Case 2026-17, court order",
        "admin_a",
        "Case closed",
    )
    placed, lifted = events("legal_hold.place")[0], events("legal_hold.lift")[0]
    assert (placed.actor, placed.detail["reason"], lifted.actor, lifted.detail["reason"]) == (
        "admin_a",
        "Case 2026-17, court order",
        "admin_a",
        "Case closed",
    )
    assert [e.outcome for e in events("study.delete")] == ["denied", "success"]


def test_keep_and_flag_keeps_a_study_past_retention_and_counts_it(principal_a, run):
    instances = store_series(principal_a, "CT", 1, study_date=OLD)
    conditions(principal_a, retention_years=10, at_retention_end="keep_flag")

    report = run()

    assert report.studies_deleted == 0 and Study.objects.count() == 1 and instances[0].storage_name in archive_names()
    snapshot = StorageSnapshot.objects.get()
    assert (snapshot.studies_flagged, snapshot.studies_due_for_deletion) == (1, 0)


def test_a_study_of_several_modalities_keeps_to_the_strictest_row(principal_a, run):
    study_uid = store_series(principal_a, "CT", 1, study_date=OLD)[0].study.study_instance_uid
    store(principal_a, synth_bytes("MR", rows=32, cols=32, study_uid=study_uid, study_date=OLD))
    conditions(principal_a, retention_years=5, at_retention_end="delete")
    conditions(principal_a, "MR", retention_years=30, at_retention_end="delete")

    run()

    assert Study.objects.filter(study_instance_uid=study_uid).exists()  # MR keeps it until 2040


def test_retention_counted_from_receipt_ignores_an_old_study_date(principal_a, run):
    store_series(principal_a, "CT", 1, study_date=OLD)
    conditions(principal_a, retention_years=5, retention_from="receipt", at_retention_end="delete")

    assert run().studies_deleted == 0
    assert run(today=timezone.localdate() + timedelta(days=5 * 366)).studies_deleted == 1


def test_immutable_conditions_refuse_an_admins_deletion_before_retention_ends(principal_a):
    recent = store_series(principal_a, "CT", 1, study_date=date(2020, 1, 10))[0]
    conditions(principal_a, retention_years=10, immutable=True, at_retention_end="keep_flag")

    with pytest.raises(DeletionRefused, match="immutable and its retention ends on 2030-01-10"):
        delete_study(principal=principal_a, study=recent.study, reason="patient asked")

    assert Study.objects.filter(pk=recent.study_id).exists() and recent.storage_name in archive_names()
    [refused] = events("study.delete")
    assert (refused.outcome, refused.actor, refused.detail["reason"]) == ("denied", "admin_a", "patient asked")


def test_immutable_conditions_let_an_admin_delete_once_retention_has_ended(principal_a, django_capture_on_commit_callbacks):
    old = store_series(principal_a, "CT", 1, study_date=OLD)[0]
    conditions(principal_a, retention_years=10, immutable=True, at_retention_end="keep_flag")

    with django_capture_on_commit_callbacks(execute=True):
        delete_study(principal=principal_a, study=old.study, reason="flagged, reviewed")

    assert not Study.objects.exists() and old.storage_name not in archive_names()


def test_without_immutability_an_admin_may_delete_before_retention_ends(principal_a, django_capture_on_commit_callbacks):
    recent = store_series(principal_a, "CT", 1)[0]
    conditions(principal_a, retention_years=10, immutable=False)

    with django_capture_on_commit_callbacks(execute=True):
        delete_study(principal=principal_a, study=recent.study, reason="sent to the wrong institution")

    assert not Study.objects.exists() and archive_names() == []


def test_a_clinician_cannot_delete_a_study(inst_a, principal_a):
    study = store_series(principal_a, "CT", 1)[0].study
    clinician = principal_of(member(inst_a, "clin", ["receive"]))

    with pytest.raises(RoleRequired, match="Institution admin"):
        delete_study(principal=clinician, study=study, reason="x")

    assert Study.objects.filter(pk=study.pk).exists()


def test_immutable_conditions_can_be_made_stricter_but_never_weaker(principal_a):
    conditions(principal_a, retention_years=10, immutable=True)
    refused = [
        {"retention_years": 10, "immutable": False},
        {"retention_years": 5, "immutable": True},
        {"retention_years": 10, "immutable": True, "retention_from": "receipt"},
    ]
    for values in refused:
        with pytest.raises(ValidationError, match="immutable"):
            conditions(principal_a, **values)
    with pytest.raises(ValidationError, match="immutable"):
        conditions(principal_a, "CT", retention_years=2, immutable=False)  # a modality row may not undercut it either

    conditions(principal_a, retention_years=20, immutable=True)
    conditions(principal_a, "CT", retention_years=25, immutable=True)
    conditions(principal_a, "MR", retention_years=20, immutable=True)

    rows = principal_a.institution.storage_conditions.order_by("modality")
    assert list(rows.values_list("modality", "retention_years")) == [("", 20), ("CT", 25), ("MR", 20)]
    with pytest.raises(ValidationError, match="immutable"):
        remove_storage_condition(principal=principal_a, condition=rows.get(modality="CT"))  # the default's 20 years undercut 25
    remove_storage_condition(principal=principal_a, condition=rows.get(modality="MR"))  # the default is as strict
    assert list(rows.values_list("modality", flat=True)) == ["", "CT"]


# --- Condition changes ----------------------------------------------------------------------------------------------


def test_a_condition_change_is_audited_and_applies_on_the_next_run(principal_a, run):
    store_series(principal_a, "CT", 1, study_date=OLD)
    conditions(principal_a)  # kept without limit
    assert run().studies_deleted == 0

    conditions(principal_a, retention_years=10, at_retention_end="delete", required_backup_copies=2)

    [change] = events("storage_condition.update")
    assert change.actor == "admin_a" and change.detail["modality"] == "default"
    assert change.detail["changes"] == {
        "retention_years": ["no limit", 10],
        "at_retention_end": ["keep_flag", "delete"],
        "required_backup_copies": [0, 2],
    }
    assert Study.objects.count() == 1  # nothing happens until the run
    assert run().studies_deleted == 1


def test_saving_the_same_values_records_no_change(principal_a):
    conditions(principal_a, retention_years=10)
    conditions(principal_a, retention_years=10)
    assert len(events("storage_condition.create")) == 1 and events("storage_condition.update") == []


@pytest.mark.parametrize(
    "values, field",
    [
        ({"retention_years": 0}, "retention_years"),
        ({"retention_years": 201}, "retention_years"),
        ({"retention_from": "birth"}, "retention_from"),
        ({"at_retention_end": "archive"}, "at_retention_end"),
        ({"compression": "1.2.840.10008.1.2.4.50"}, "compression"),  # JPEG baseline: lossy, never at rest
        ({"required_backup_copies": 11}, "required_backup_copies"),
        ({"required_backup_copies": -1}, "required_backup_copies"),
    ],
)
def test_invalid_condition_values_are_refused_and_change_nothing(principal_a, values, field):
    conditions(principal_a, retention_years=7)

    with pytest.raises(ValidationError) as refused:
        conditions(principal_a, **{"retention_years": 7, **values})

    assert field in refused.value.error_dict
    assert list(principal_a.institution.storage_conditions.values_list("retention_years", flat=True)) == [7]
    assert events("storage_condition.update") == []


# --- Backup copies --------------------------------------------------------------------------------------------------


def test_studies_lacking_the_required_backup_copies_are_counted(principal_a, run):
    backed_up = store_series(principal_a, "CT", 1)[0].study
    store_series(principal_a, "CT", 1, patient_id="PAT-9")
    Study.objects.filter(pk=backed_up.pk).update(backup_copies=2)
    conditions(principal_a, required_backup_copies=2)

    run()

    assert StorageSnapshot.objects.get().studies_lacking_backup_copies == 1


# --- Dry run --------------------------------------------------------------------------------------------------------


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(principal_a, run):
    old = store_series(principal_a, "CT", 1, study_date=OLD)[0]
    store_series(principal_a, "CT", 1)
    conditions(principal_a, retention_years=10, at_retention_end="delete", compression=JPEG2000Lossless)
    before = sorted(Instance.objects.values_list("sha256", "storage_name"))
    audit_before = AuditEvent.objects.count()

    report = run(dry_run=True)

    assert f"would delete study {old.study.study_instance_uid}: retention ended on 2020-03-15" in report.lines
    assert report.instances_compressed == 1 and report.bytes_saved > 0  # the old study would be deleted, not compressed
    assert sorted(Instance.objects.values_list("sha256", "storage_name")) == before and Study.objects.count() == 2
    assert StorageSnapshot.objects.count() == 0 and AuditEvent.objects.count() == audit_before
    assert LegalHold.objects.count() == 0
