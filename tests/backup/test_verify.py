"""Verification (backup/engine/verify.py): files that changed or vanished in the backup target are found, named, damage
every set that holds them, are told to the people responsible, and are written again by the next backup."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from backup.engine import run as runs
from backup.engine import schedule
from backup.models import BackupBlob, BackupObject, BackupRun, BackupSet
from images.models import Study
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent, Notification
from tests.backup.runs_support import (
    accepted_contract,
    backup_now,
    blob_path,
    execute,
    ingest,
    ingest_demo,
    target_root,
    verify_now,
)
from tests.dicom_files import synth_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(inst_a):
    return ingest_demo(inst_a)


def corrupt(path, data=b"\x00garbage\x00"):
    raw = bytearray(path.read_bytes())
    raw[200 : 200 + len(data)] = data
    path.write_bytes(bytes(raw))


def test_a_corrupted_blob_is_found_named_and_damages_its_set(inst_a, demo, admin_a, admin_b, staff_user):
    contract = accepted_contract(inst_a, "per_examination")
    backup_now(contract)
    victim = demo[3]  # a study of its own
    corrupt(blob_path(victim.sha256))
    name = f"blobs/{victim.sha256[:2]}/{victim.sha256[2:4]}/{victim.sha256}"

    run = verify_now(contract)

    assert run.status == BackupRun.Status.FAILED
    assert f"verification found 1 files changed or missing in the backup target: {name}" in run.message
    damaged = BackupSet.objects.get(contract=contract, status=BackupSet.Status.DAMAGED)
    assert damaged.problems == [
        {
            "file": name,
            "problem": "changed",
            "sop_instance_uid": victim.sop_instance_uid,
            "study_instance_uid": victim.study.study_instance_uid,
        }
    ]
    assert damaged.backup_object.study_id == victim.study_id
    assert BackupSet.objects.filter(contract=contract, status=BackupSet.Status.VERIFIED).count() == 3
    assert BackupObject.objects.get(pk=damaged.backup_object_id).dirty
    assert BackupBlob.objects.get(sha256=victim.sha256).damaged_at is not None
    assert Study.objects.get(pk=victim.study_id).backup_copies == 0
    assert Study.objects.get(pk=demo[0].study_id).backup_copies == 1
    told = set(Notification.objects.filter(text__contains=name).values_list("user__username", flat=True))
    assert told == {admin_a.user.username, staff_user.username}
    assert AuditEvent.objects.filter(action="backup.set.damaged", object_id=str(damaged.pk), institution=inst_a).exists()


def test_a_vanished_blob_is_reported_missing(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    blob_path(demo[0].sha256).unlink()

    run = verify_now(contract)

    assert run.status == BackupRun.Status.FAILED
    backup_set = BackupSet.objects.get(contract=contract)
    assert backup_set.status == BackupSet.Status.DAMAGED
    assert [(p["problem"], p["sop_instance_uid"]) for p in backup_set.problems] == [("missing", demo[0].sop_instance_uid)]


def test_a_changed_manifest_damages_its_set(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    backup_set = BackupSet.objects.get(contract=contract)
    path = target_root() / backup_set.manifest_name
    document = json.loads(path.read_bytes())
    document["files"] = document["files"][1:]
    path.write_text(json.dumps(document))

    run = verify_now(contract)

    assert run.status == BackupRun.Status.FAILED
    backup_set.refresh_from_db()
    assert backup_set.status == BackupSet.Status.DAMAGED
    assert backup_set.problems[0] == {"file": backup_set.manifest_name, "problem": "changed"}


def test_the_next_backup_writes_a_damaged_blob_again_from_the_archive(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    corrupt(blob_path(demo[1].sha256))
    verify_now(contract)

    repaired = backup_now(contract)

    assert repaired.status == BackupRun.Status.DONE, repaired.message
    assert repaired.result["written_files"] == 1
    assert repaired.result["reread_files"] == 1  # only what it wrote is re-read (and checked again in the pass)
    newest = BackupSet.objects.filter(contract=contract).order_by("-pk").first()
    assert newest.status == BackupSet.Status.VERIFIED
    assert verify_now(contract).status == BackupRun.Status.DONE
    # the old set, holding the same files, is whole again once verified by name
    old = BackupSet.objects.filter(contract=contract).order_by("pk").first()
    assert old.status == BackupSet.Status.DAMAGED
    assert verify_now(contract, set_ids=[old.pk]).status == BackupRun.Status.DONE
    old.refresh_from_db()
    assert old.status == BackupSet.Status.VERIFIED


def test_a_blob_shared_with_another_institution_damages_its_set_too_and_tells_only_its_people(inst_a, inst_b, admin_a, admin_b):
    same = synth_bytes("CT", rows=32, cols=32, patient_id="SHARED")
    shared_a, shared_b = ingest(inst_a, same), ingest(inst_b, same)
    assert shared_a.sha256 == shared_b.sha256
    contract_a, contract_b = accepted_contract(inst_a), accepted_contract(inst_b)
    backup_now(contract_a)
    backup_now(contract_b)
    assert BackupBlob.objects.count() == 1  # one file in the target, in both institutions' sets
    corrupt(blob_path(shared_a.sha256))

    verify_now(contract_a)

    assert BackupSet.objects.get(contract=contract_b).status == BackupSet.Status.DAMAGED
    notes_b = Notification.objects.filter(user=admin_b.user)
    assert notes_b.count() == 1 and "Beta Clinic" in notes_b.get().text and "Alpha" not in notes_b.get().text
    assert Notification.objects.filter(user=admin_a.user).count() == 1


def test_the_verification_pass_finds_a_file_that_vanished_or_shrank_after_it_was_written(inst_a, demo):
    contract = accepted_contract(inst_a)
    shrunk, vanished = demo[4], demo[5]

    def rot_before_verifying(snapshot):
        if snapshot.phase.startswith("Verifying") and blob_path(vanished.sha256).exists():
            blob_path(shrunk.sha256).write_bytes(blob_path(shrunk.sha256).read_bytes()[:-1])
            blob_path(vanished.sha256).unlink()

    run = runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    run = execute(run, listener=rot_before_verifying)

    assert run.status == BackupRun.Status.FAILED
    assert "verification after writing found 2 files changed or missing" in run.message
    assert f"blobs/{shrunk.sha256[:2]}/{shrunk.sha256[2:4]}/{shrunk.sha256}" in run.message
    backup_set = BackupSet.objects.get(contract=contract)
    assert backup_set.status == BackupSet.Status.FAILED  # never VERIFIED
    assert {(p["sop_instance_uid"], p["problem"]) for p in backup_set.problems} == {
        (shrunk.sop_instance_uid, "changed"),
        (vanished.sop_instance_uid, "missing"),
    }
    again = backup_now(contract)
    assert again.status == BackupRun.Status.DONE and again.result["written_files"] == 2  # written again, verified


def test_the_scheduled_verification_starts_once_a_day_per_contract(inst_a, demo):
    contract = accepted_contract(inst_a)
    untouched = accepted_contract(inst_a, "per_patient")  # nothing verified yet: nothing to re-check
    backup_now(contract)

    started = schedule.start_due_verifications()

    assert [(r.contract_id, r.kind, r.trigger) for r in started] == [(contract.pk, "verify", "schedule")]
    assert execute(started[0]).status == BackupRun.Status.DONE
    assert schedule.start_due_verifications() == []  # done today
    later = timezone.now() + timezone.timedelta(days=1, minutes=1)
    assert [r.contract_id for r in schedule.start_due_verifications(now=later)] == [contract.pk]
    assert not BackupRun.objects.filter(contract=untouched).exists()


def test_verification_re_reads_each_shared_blob_once(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup_now(contract)
    backup_now(contract)  # a second set naming the same blobs

    run = verify_now(contract)

    assert run.result == {"sets": 2, "files": len(demo), "bytes": sum(i.size_bytes for i in demo), "damaged_sets": []}
