"""The runs panel in a real browser: "Back up now" queues a run, and static/js/backup-progress.js moves its bar to the
end and shows the result when the run finishes (carried out here in-process, as a worker would)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from backup.engine import run as runs
from backup.models import BackupRun
from tests.backup.runs_support import accepted_contract, ingest_demo
from tests.browser.conftest import log_in, screenshot

pytestmark = pytest.mark.browser


def test_backup_now_queues_a_run_whose_progress_bar_follows_it_to_the_end(page, browser_context, live_server, admin_a, inst_a, monkeypatch):
    # This test is the worker: the queued run is carried out below, in-process, on this test's storage. Keep it off the
    # broker, where a real worker of the suite (on PostgreSQL + Redis) would take it first.
    queued = []
    monkeypatch.setattr(runs, "_enqueue", queued.append)
    ingest_demo(inst_a)
    contract = accepted_contract(inst_a, "per_patient")
    log_in(browser_context, live_server, admin_a.user)
    page.goto(f"/backup/contracts/{contract.pk}/")

    page.get_by_test_id("backup-now").click()

    run = BackupRun.objects.get(contract=contract)
    assert queued == [run.pk]
    expect(page.locator(".messages")).to_contain_text(f"Backup {run.pk} is queued")
    row = page.locator(f'tr[data-run="{run.pk}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("Queued")
    expect(page.get_by_test_id("backup-now")).to_be_disabled()  # one run at a time
    screenshot(page, "backup-queued")

    runs.execute(run.pk)

    expect(row.locator('[data-field="status"]')).to_have_text("Done", timeout=15_000)
    expect(row.locator("progress")).to_have_attribute("value", "100")
    expect(row).to_contain_text("Backed up 8 files")
    expect(page.get_by_test_id("sets-table").locator("tr[data-set]")).to_have_count(3)
    expect(page.get_by_test_id("backup-now")).to_be_enabled()
    screenshot(page, "backup-done")
