"""`manage.py backup run|verify|restore`: in-process runs, plain progress lines (a bar on a terminal), exit codes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import zipfile

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from django.db import connection

from backup.management.commands import backup as command
from backup.models import BackupRun, BackupSet
from images.models import Instance
from tests.backup.runs_support import accepted_contract, archive_state, blob_path, delete_from_archive, ingest_demo, sha256_of


@pytest.fixture
def demo(inst_a):
    return ingest_demo(inst_a)


def backup(*args) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("backup", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as stop:
        code = stop.code
    return out.getvalue(), err.getvalue(), code


@pytest.mark.django_db
def test_run_backs_up_and_verifies_with_plain_progress_lines(inst_a, demo):
    contract = accepted_contract(inst_a, "per_patient")

    out, err, code = backup("run", "--contract", str(contract.pk))

    assert code == 0
    run = BackupRun.objects.get(contract=contract)
    assert (run.status, run.trigger) == ("done", "command")
    assert out.splitlines()[0] == f"Backup {run.pk} of contract {contract.pk} ({contract}, Alpha Hospital)"
    assert "done in" in out and "Backed up 8 files" in out and "into 3 verified sets" in out
    lines = err.splitlines()
    assert lines[0] == "Copying 8 files of 3 objects of backup"
    assert any(line.strip().startswith("100%  8/8 files") for line in lines)
    assert any(line.startswith("Verifying: 3 manifests re-read, 8 files written checked in the target") for line in lines)
    assert "\r" not in err  # no bar redrawing into a log


@pytest.mark.django_db
def test_run_of_one_object_backs_up_only_it(inst_a, demo):
    contract = accepted_contract(inst_a, "per_patient")
    backup("run", "--contract", str(contract.pk))
    first = BackupSet.objects.filter(contract=contract).order_by("pk").first()

    out, _, code = backup("run", "--contract", str(contract.pk), "--object", str(first.backup_object_id))

    assert code == 0
    assert BackupSet.objects.filter(contract=contract).count() == 4
    assert BackupSet.objects.filter(backup_object=first.backup_object).count() == 2


@pytest.mark.django_db
def test_a_progress_bar_is_drawn_on_a_terminal(inst_a, demo):
    contract = accepted_contract(inst_a)
    leader, follower = os.openpty()
    terminal = os.fdopen(follower, "w")
    try:
        call_command("backup", "run", "--contract", str(contract.pk), stdout=io.StringIO(), stderr=OutputWrapper(terminal))
        terminal.flush()
        drawn = os.read(leader, 65536).decode()
    finally:
        terminal.close()
        os.close(leader)
    assert "\r[##############################] 100%" in drawn


@pytest.mark.django_db
def test_unknown_and_unaccepted_contracts_do_not_start(inst_a, demo):
    with pytest.raises(CommandError, match="no backup contract 999") as unknown:
        call_command("backup", "run", "--contract", "999")
    proposed = accepted_contract(inst_a, status="proposed")
    with pytest.raises(CommandError, match="not accepted; only an accepted contract runs") as refused:
        call_command("backup", "run", "--contract", str(proposed.pk))
    assert unknown.value.returncode == refused.value.returncode == command.EXIT_CANNOT_START
    assert not BackupRun.objects.exists()


@pytest.mark.django_db
def test_a_second_run_is_refused_while_one_is_active(inst_a, demo):
    contract = accepted_contract(inst_a)
    BackupRun.objects.create(contract=contract, kind="backup")
    with pytest.raises(CommandError, match="already queued.*or use --wait"):
        call_command("backup", "run", "--contract", str(contract.pk))


@pytest.mark.django_db(transaction=True)
def test_wait_waits_for_the_active_run_then_runs(inst_a, demo, monkeypatch):
    monkeypatch.setattr(command, "WAIT_POLL_SECONDS", 0.05)
    contract = accepted_contract(inst_a)
    active = BackupRun.objects.create(contract=contract, kind="backup", status="running")

    def finish_the_other_run():
        BackupRun.objects.filter(pk=active.pk).update(status="done")
        connection.close()

    timer = threading.Timer(0.5, finish_the_other_run)
    timer.start()
    out, err, code = backup("run", "--contract", str(contract.pk), "--wait")
    timer.join()

    assert code == 0
    assert err.startswith(f"waiting: a run of this contract is already running: backup {active.pk}")
    assert BackupRun.objects.filter(contract=contract, status="done").count() == 2


@pytest.mark.django_db
def test_verify_names_a_changed_file_and_exits_1(inst_a, demo):
    contract = accepted_contract(inst_a)
    backup("run", "--contract", str(contract.pk))
    victim = demo[0]
    blob_path(victim.sha256).write_bytes(b"changed")

    out, _, code = backup("verify", "--contract", str(contract.pk))

    assert code == command.EXIT_FAILED
    assert "FAILED" in out and f"blobs/{victim.sha256[:2]}/{victim.sha256[2:4]}/{victim.sha256}" in out


@pytest.mark.django_db
def test_verify_of_one_set(inst_a, demo):
    contract = accepted_contract(inst_a, "per_patient")
    backup("run", "--contract", str(contract.pk))
    one = BackupSet.objects.filter(contract=contract).first()

    out, _, code = backup("verify", "--contract", str(contract.pk), "--set", str(one.pk))

    assert code == 0
    assert f"Verified 1 sets: re-read {one.files} files" in out
    with pytest.raises(CommandError, match="has no written backup set 12345"):
        call_command("backup", "verify", "--contract", str(contract.pk), "--set", "12345")


@pytest.mark.django_db
def test_restore_of_a_study_into_the_archive(inst_a, demo):
    contract = accepted_contract(inst_a, "per_examination")
    backup("run", "--contract", str(contract.pk))
    before = archive_state(inst_a)
    study = demo[0].study.study_instance_uid
    delete_from_archive(inst_a)

    out, _, code = backup("restore", "--contract", str(contract.pk), "--study", study)

    assert code == 0
    assert "Restored study" in out and "3 files restored" in out
    assert archive_state(inst_a) == {sop: d for sop, d in before.items() if Instance.objects.filter(sop_instance_uid=sop).exists()}
    assert set(Instance.objects.values_list("study__study_instance_uid", flat=True)) == {study}


@pytest.mark.django_db
def test_restore_of_everything_as_a_zip_file(inst_a, demo, tmp_path):
    contract = accepted_contract(inst_a)
    backup("run", "--contract", str(contract.pk))
    target = tmp_path / "out" / "everything.zip"
    target.parent.mkdir()

    out, _, code = backup("restore", "--contract", str(contract.pk), "--all", "--zip", str(target))

    assert code == 0
    assert f"zip: {target}" in out
    with zipfile.ZipFile(target) as archive:
        assert sorted(sha256_of(archive.read(n)) for n in archive.namelist()) == sorted(i.sha256 for i in demo)
    with pytest.raises(CommandError, match="already exists"):
        call_command("backup", "restore", "--contract", str(contract.pk), "--all", "--zip", str(target))
    assert not [p for p in target.parent.iterdir() if p.name != "everything.zip"]  # no temporary file left


@pytest.mark.django_db
def test_restore_needs_exactly_one_scope(inst_a, demo):
    contract = accepted_contract(inst_a)
    with pytest.raises(CommandError, match="one of the arguments --study --patient --acquiring-institution --all is required"):
        call_command("backup", "restore", "--contract", str(contract.pk))


def test_help_lists_the_actions_and_exit_codes():
    result = subprocess.run(
        [sys.executable, "manage.py", "backup", "--help"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "MEDARCHIVE_TESTING": "1", "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for text in ("{run,verify,restore}", "re-read every file", "Exit status:", "2  nothing ran", "manage.py backup restore --contract 3"):
        assert text in result.stdout
