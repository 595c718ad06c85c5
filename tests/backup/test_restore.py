"""Restore (backup/engine/restore.py): files and index rows deleted from the archive come back bit-identical, in each
mode and for each scope; what still matches is left alone; a zip export holds the backed-up bytes; a damaged file in
the backup target is named, not restored."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.storage import storages

from backup.engine import restore as restoring
from backup.engine import run as runs
from backup.engine.errors import NothingToRestore, RunNotAllowed
from backup.models import BackupObject, BackupRun, BackupSet, Contract
from images.models import ArchivePolicy, Instance
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.backup.runs_support import (
    MODES,
    accepted_contract,
    archive_state,
    backup_now,
    blob_path,
    delete_from_archive,
    ingest,
    ingest_demo,
    restore_now,
    sha256_of,
)
from tests.dicom_files import synth_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(inst_a):
    return ingest_demo(inst_a)


def index_rows(institution) -> dict[str, tuple]:
    """What the archive's index says of every instance, without database ids and arrival times."""
    rows = {}
    for i in Instance.objects.filter(institution=institution).select_related("series", "study__patient"):
        patient, study, series = i.study.patient, i.study, i.series
        rows[i.sop_instance_uid] = (
            (i.sha256, i.dataset_sha256, i.size_bytes, i.transfer_syntax_uid, i.sop_class_uid, i.instance_number, i.rows, i.columns),
            (i.number_of_frames, i.bits_allocated, i.photometric_interpretation, i.conditions, i.metadata),
            (series.series_instance_uid, series.modality, series.series_number, series.acquiring_institution_name, series.conditions),
            (series.number_of_instances, series.size_bytes, series.body_part_examined, series.manufacturer, series.station_name),
            (study.study_instance_uid, study.study_date, study.study_description, study.accession_number, study.modalities_in_study),
            (study.number_of_series, study.number_of_instances, study.size_bytes, study.referring_physician_name),
            (patient.patient_id, patient.issuer_of_patient_id, patient.patient_name, patient.patient_birth_date, patient.patient_sex),
        )
    return rows


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_backs_up_verifies_and_restores_everything_bit_identically(inst_a, demo, mode):
    contract = accepted_contract(inst_a, mode)
    assert backup_now(contract).status == BackupRun.Status.DONE
    files_before, index_before = archive_state(inst_a), index_rows(inst_a)
    assert len(files_before) == len(demo)
    assert all(recorded == stored for recorded, stored in files_before.values())

    assert delete_from_archive(inst_a) == len(demo)
    assert not Instance.objects.filter(institution=inst_a).exists()

    run = restore_now(contract, scope="all")

    assert run.status == BackupRun.Status.DONE, run.message
    assert run.result["restored"] == len(demo)
    assert archive_state(inst_a) == files_before  # Instance.sha256 and the stored bytes, per SOP Instance UID
    assert index_rows(inst_a) == index_before
    # the objects still name the same patients and studies, so the next backup copies nothing
    again = backup_now(contract)
    assert again.result["written_files"] == 0
    assert BackupObject.objects.filter(contract=contract).count() == BackupSet.objects.filter(contract=contract).count() // 2


@pytest.mark.parametrize(
    ("mode", "scope", "pick"),
    [
        ("per_examination", "study", lambda i: i.study.study_instance_uid),
        ("per_patient", "patient", lambda i: i.study.patient.patient_id),
        ("per_institution", "acquiring_institution", lambda i: i.series.acquiring_institution_name or "Alpha Hospital"),
        ("all_at_time", "study", lambda i: i.study.study_instance_uid),
        ("all_at_time", "patient", lambda i: i.study.patient.patient_id),
    ],
)
def test_one_study_patient_or_acquiring_institution_comes_back_alone(inst_a, demo, mode, scope, pick):
    contract = accepted_contract(inst_a, mode)
    backup_now(contract)
    before = archive_state(inst_a)
    chosen = pick(demo[0])
    wanted = [i for i in demo if pick(i) == chosen]
    assert 0 < len(wanted) < len(demo)
    delete_from_archive(inst_a)

    run = restore_now(contract, scope=scope, value=chosen)

    assert run.status == BackupRun.Status.DONE, run.message
    assert archive_state(inst_a) == {i.sop_instance_uid: before[i.sop_instance_uid] for i in wanted}


def test_instances_that_still_exist_and_match_are_left_alone(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    before = archive_state(inst_a)
    kept = demo[:4]
    mtimes = {i.pk: storages["archive"].get_modified_time(i.storage_name) for i in kept}
    delete_from_archive(inst_a, demo[4:])

    run = restore_now(contract, scope="all")

    assert (run.result["restored"], run.result["unchanged"]) == (len(demo) - 4, 4)
    assert archive_state(inst_a) == before
    assert {i.pk: storages["archive"].get_modified_time(i.storage_name) for i in Instance.objects.filter(pk__in=mtimes)} == mtimes


def test_a_missing_archive_file_of_an_indexed_instance_is_written_again(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    before = archive_state(inst_a)
    storages["archive"].delete(demo[2].storage_name)

    run = restore_now(contract, scope="study", value=demo[2].study.study_instance_uid)

    assert run.result["repaired"] == 1
    assert archive_state(inst_a) == before


def test_an_instance_the_archive_holds_in_another_version_is_kept(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    ArchivePolicy.objects.create(institution=inst_a, on_conflict="keep_newest")
    old = demo[0]
    newer = ingest(
        inst_a,
        synth_bytes(
            "CT",
            rows=32,
            cols=32,
            patient_id="P-1",
            patient_name="One^Patient",
            study_uid=old.study.study_instance_uid,
            series_uid=old.series.series_instance_uid,
            sop_uid=old.sop_instance_uid,
            institution_name="North Site",
            seed=9,
        ),
    )
    before = archive_state(inst_a)

    run = restore_now(contract, scope="all")

    assert run.result["kept_newer"] == 1
    assert archive_state(inst_a) == before
    assert before[old.sop_instance_uid][0] == newer.sha256


def test_a_chosen_earlier_set_brings_back_the_older_version(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    first = BackupSet.objects.get(contract=contract)
    original = archive_state(inst_a)
    ArchivePolicy.objects.create(institution=inst_a, on_conflict="keep_newest")
    old = demo[0]
    ingest(
        inst_a,
        synth_bytes(
            "CT",
            rows=32,
            cols=32,
            patient_id="P-1",
            patient_name="One^Patient",
            study_uid=old.study.study_instance_uid,
            series_uid=old.series.series_instance_uid,
            sop_uid=old.sop_instance_uid,
            institution_name="North Site",
            seed=9,
        ),
    )
    backup_now(contract)
    delete_from_archive(inst_a)

    latest = restore_now(contract, scope="study", value=old.study.study_instance_uid)
    assert archive_state(inst_a)[old.sop_instance_uid] != original[old.sop_instance_uid]
    delete_from_archive(inst_a)
    chosen = restore_now(contract, scope="all", set_id=first.pk)

    assert latest.status == chosen.status == BackupRun.Status.DONE
    assert archive_state(inst_a) == original


def test_a_zip_export_holds_the_backed_up_bytes_and_changes_nothing_in_the_archive(inst_a, demo):
    contract = accepted_contract(inst_a, "per_patient")
    backup_now(contract)
    before = archive_state(inst_a)

    run = restore_now(contract, scope="patient", value="P-1", destination="zip")

    assert run.status == BackupRun.Status.DONE, run.message
    assert run.result["export"] == f"exports/contract-{contract.pk}/restore-{run.pk}.zip"
    with restoring.open_export(run) as fh:
        data = fh.read()
    assert run.result["zip_bytes"] == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: sha256_of(archive.read(name)) for name in archive.namelist()}
    expected = {
        f"{i.study.study_instance_uid}/{i.series.series_instance_uid}/{i.sop_instance_uid}.dcm": i.sha256
        for i in demo
        if i.study.patient.patient_id == "P-1"
    }
    assert members == expected
    assert archive_state(inst_a) == before


def test_a_damaged_blob_is_not_restored_and_is_named(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    before = archive_state(inst_a)
    victim = demo[5]
    path = blob_path(victim.sha256)
    path.write_bytes(path.read_bytes()[:-100])
    delete_from_archive(inst_a)

    run = restore_now(contract, scope="all")

    assert run.status == BackupRun.Status.FAILED
    assert f"blobs/{victim.sha256[:2]}/{victim.sha256[2:4]}/{victim.sha256}" in run.message
    assert "the rest was restored" in run.message
    after = archive_state(inst_a)
    assert victim.sop_instance_uid not in after
    assert after == {sop: digests for sop, digests in before.items() if sop != victim.sop_instance_uid}
    assert BackupSet.objects.get(contract=contract).status == BackupSet.Status.DAMAGED


def test_asking_for_something_no_verified_set_holds_is_a_clear_error(inst_a, demo):
    contract = accepted_contract(inst_a)
    with pytest.raises(NothingToRestore, match="holds nothing of study 1.2.3.4"):
        runs.request_restore(contract=contract, principal=OPERATOR, scope="study", value="1.2.3.4", enqueue=False)
    backup_now(contract)
    with pytest.raises(NothingToRestore, match="holds nothing of patient NOBODY"):
        runs.request_restore(contract=contract, principal=OPERATOR, scope="patient", value="NOBODY", enqueue=False)
    assert not BackupRun.objects.filter(kind=BackupRun.Kind.RESTORE).exists()


def test_a_terminated_contract_backs_up_no_more_but_its_sets_stay_restorable(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    before = archive_state(inst_a)
    Contract.objects.filter(pk=contract.pk).update(status=Contract.Status.TERMINATED)
    contract.refresh_from_db()
    with pytest.raises(RunNotAllowed, match="terminated; no new runs start"):
        runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    with pytest.raises(RunNotAllowed, match="terminated"):
        runs.request_verify(contract=contract, principal=OPERATOR, enqueue=False)
    delete_from_archive(inst_a)

    run = restore_now(contract, scope="all")

    assert run.status == BackupRun.Status.DONE, run.message
    assert archive_state(inst_a) == before
    for status in ("proposed", "rejected"):
        Contract.objects.filter(pk=contract.pk).update(status=status)
        contract.refresh_from_db()
        with pytest.raises(RunNotAllowed, match="not accepted"):
            runs.request_restore(contract=contract, principal=OPERATOR, scope="all", enqueue=False)


def test_a_restore_is_audited_with_what_came_back(inst_a, demo, admin_a):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    delete_from_archive(inst_a, demo[:2])
    from subscribers.access import principal_for_user

    run = runs.request_restore(contract=contract, principal=principal_for_user(admin_a.user, inst_a.pk), scope="all", enqueue=False)
    runs.execute(run.pk)

    requested = AuditEvent.objects.get(action="backup.restore.requested", object_id=str(run.pk))
    assert requested.user == admin_a.user and requested.institution == inst_a
    done = AuditEvent.objects.get(action="backup.restore", object_id=str(run.pk))
    assert done.detail["restored"] == 2 and done.detail["unchanged"] == len(demo) - 2
    stored = AuditEvent.objects.get(action="instances.store", detail__source="restore")
    assert stored.user == admin_a.user and stored.detail["stored"] == 2
