"""The runs panel of the contract page (backup/views/runs.py): start a backup, a verification or a restore; the JSON
progress a bar polls; the restore zip download; another institution gets 404 everywhere."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from backup.models import BackupRun, BackupSet
from images.models import Instance
from subscribers.models import AuditEvent
from tests.backup.runs_support import accepted_contract, backup_now, blob_path, ingest_demo, restore_now, sha256_of, verify_now
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def contract(inst_a):
    ingest_demo(inst_a)
    return accepted_contract(inst_a, "per_examination")


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_the_contract_page_offers_backup_verify_and_restore_and_lists_runs_and_sets(client, admin_a, contract):
    backup_now(contract)
    login(client, admin_a.user)

    page = client.get(reverse("backup-contract", args=[contract.pk]))

    body = page.content.decode()
    assert page.status_code == 200
    for testid in ('data-testid="backup-now"', 'data-testid="verify-now"', 'data-testid="restore-form"', 'data-testid="sets-table"'):
        assert testid in body
    assert "js/backup-progress.js" in body
    assert body.count("data-set=") == 4


def test_an_admin_starts_a_backup_and_a_second_is_refused_with_the_reason(client, admin_a, contract, django_capture_on_commit_callbacks):
    login(client, admin_a.user)
    url = reverse("backup-run-start", args=[contract.pk])

    with django_capture_on_commit_callbacks() as enqueued:
        first = client.post(url, follow=True)
    second = client.post(url, follow=True)

    run = BackupRun.objects.get(contract=contract)
    assert (run.kind, run.status, run.requested_by) == ("backup", "queued", admin_a.user)
    assert len(enqueued) == 1  # the task is sent once the run row is committed
    assert f"Backup {run.pk} is queued" in " ".join(messages_of(first))
    assert f"No backup started: a run of this contract is already queued: backup {run.pk}" in " ".join(messages_of(second))
    assert BackupRun.objects.filter(contract=contract).count() == 1
    assert 'data-progress-url="' + reverse("backup-run-progress", args=[run.pk]) in second.content.decode()


def test_provider_staff_start_runs_of_any_institution(client, staff_user, contract):
    login(client, staff_user)
    response = client.post(reverse("backup-run-start", args=[contract.pk]))
    assert response.status_code == 302
    assert BackupRun.objects.get(contract=contract).requested_by == staff_user


def test_a_terminated_contract_offers_restore_only_and_starts_no_backup(client, admin_a, contract):
    backup_now(contract)
    contract.status = "terminated"
    contract.save()
    login(client, admin_a.user)

    page = client.get(reverse("backup-contract", args=[contract.pk])).content.decode()
    refused = client.post(reverse("backup-run-start", args=[contract.pk]), follow=True)

    assert 'data-testid="backup-now"' not in page and 'data-testid="verify-now"' not in page
    assert 'data-testid="restore-form"' in page and "its verified sets can still be restored" in page
    assert "was terminated; no new runs start" in " ".join(messages_of(refused))
    assert BackupRun.objects.filter(contract=contract).count() == 1


def test_a_restore_is_started_from_the_form_and_bad_input_changes_nothing(client, admin_a, contract, inst_a):
    backup_now(contract)
    login(client, admin_a.user)
    url = reverse("backup-restore-start", args=[contract.pk])

    bad = client.post(url, {"scope": "study", "value": "", "destination": "archive"}, follow=True)
    unknown = client.post(url, {"scope": "study", "value": "9.9.9", "destination": "archive"}, follow=True)
    good = client.post(url, {"scope": "patient", "value": "P-2", "destination": "zip"}, follow=True)

    assert "No restore started: name the study to restore" in " ".join(messages_of(bad))
    assert "holds nothing of study 9.9.9" in " ".join(messages_of(unknown))
    restore = BackupRun.objects.get(kind="restore")
    assert restore.parameters == {"scope": "patient", "value": "P-2", "destination": "zip"}
    assert f"Restore {restore.pk} is queued" in " ".join(messages_of(good))


def test_progress_is_json_for_the_bar(client, admin_a, contract):
    run = backup_now(contract)
    login(client, admin_a.user)

    data = client.get(reverse("backup-run-progress", args=[run.pk])).json()

    assert data["status"] == "done" and data["active"] is False
    assert data["percent"] == 100
    assert data["files_total"] == data["files_done"] > 0  # the last phase: verification re-read every new file
    assert data["download_url"] is None


def test_the_restore_zip_downloads_for_the_institutions_admin_only(client, admin_a, staff_user, contract, inst_a):
    backup_now(contract)
    run = restore_now(contract, scope="all", destination="zip")
    url = reverse("backup-run-download", args=[run.pk])
    login(client, admin_a.user)

    response = client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        digests = {sha256_of(archive.read(name)) for name in archive.namelist()}
    assert digests == set(Instance.objects.filter(institution=inst_a).values_list("sha256", flat=True))
    assert AuditEvent.objects.filter(action="backup.restore.download", object_id=str(run.pk), user=admin_a.user).exists()
    assert client.get(reverse("backup-run-progress", args=[run.pk])).json()["download_url"] == url

    login(client, staff_user)  # provider staff do not read patient data
    assert client.get(url).status_code == 404


def test_another_institution_gets_404_for_every_run_url(client, admin_b, contract):
    run = backup_now(contract)
    export = restore_now(contract, scope="all", destination="zip")
    login(client, admin_b.user)

    for name, args in [
        ("backup-run-start", [contract.pk]),
        ("backup-verify-start", [contract.pk]),
        ("backup-restore-start", [contract.pk]),
    ]:
        assert client.post(reverse(name, args=args), {"scope": "all"}).status_code == 404
    for name, pk in [("backup-run", run.pk), ("backup-run-progress", run.pk), ("backup-run-download", export.pk)]:
        assert client.get(reverse(name, args=[pk])).status_code == 404
    assert BackupRun.objects.count() == 2


def test_a_member_without_the_admin_role_cannot_start_runs(client, clinician_a, contract):
    login(client, clinician_a.user)
    assert client.post(reverse("backup-run-start", args=[contract.pk])).status_code == 403
    assert not BackupRun.objects.exists()


def test_the_run_page_names_the_damaged_files(client, admin_a, contract, inst_a):
    backup_now(contract)
    backup_set = BackupSet.objects.filter(contract=contract).first()
    sha = backup_set.entries.first().blob.sha256
    blob_path(sha).write_bytes(b"rot")
    run = verify_now(contract)
    login(client, admin_a.user)

    page = client.get(reverse("backup-run", args=[run.pk])).content.decode()

    assert f"blobs/{sha[:2]}/{sha[2:4]}/{sha}" in page
    assert "Damaged" in page
