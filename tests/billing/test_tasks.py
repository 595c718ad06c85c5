"""The monthly invoicing task: scheduled by beat, run by a real worker, idempotent."""

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.utils import timezone
from pypdf import PdfReader

from backup.models import BackupMode
from billing.models import Invoice, InvoicePdf, InvoiceRun
from billing.periods import last_month
from billing.tasks import issue_last_month_invoices
from medarchive.celery import app
from tests.billing.builders import accepted_contract, at, backup_object
from tests.worker import wait_until


def _contract_through_last_month(institution):
    """Accepted before last month began, one object the whole month: 10 points x 2.5 = 25.00 whatever its length."""
    start = last_month().start - timedelta(days=40)
    contract = accepted_contract(
        institution,
        mode=BackupMode.ALL_AT_TIME,
        points="10",
        rate="2.5",
        period_start=start,
        accepted_at=at(start.year, start.month, start.day, 9),
    )
    backup_object(contract, "Everything", created_at=at(start.year, start.month, start.day, 10))
    return contract


def test_beat_schedules_the_monthly_invoices_on_the_first():
    entry = settings.CELERY_BEAT_SCHEDULE["billing-monthly-invoices"]
    assert entry["task"] == "billing.tasks.issue_last_month_invoices"
    assert entry["schedule"] == crontab(minute=0, hour=3, day_of_month=1)
    app.loader.import_default_modules()
    assert "billing.tasks.issue_last_month_invoices" in app.tasks


@pytest.mark.django_db
def test_task_issues_last_months_invoices_once(inst_a, inst_b):
    _contract_through_last_month(inst_a)  # inst_b has no contract: skipped, not refused

    issue_last_month_invoices()
    issue_last_month_invoices()

    invoice = Invoice.objects.get()
    assert (invoice.institution, invoice.period_start, invoice.total) == (inst_a, last_month().start, Decimal("25.00"))
    run = InvoiceRun.objects.get()
    assert (run.trigger, run.status, run.issued, run.refused) == ("schedule", "done", [invoice.number], [])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_monthly_task_runs_in_a_real_worker(celery_worker_process, inst_a):
    _contract_through_last_month(inst_a)

    issue_last_month_invoices.delay()

    invoice = wait_until(
        lambda: Invoice.objects.filter(institution=inst_a, issued_at__isnull=False).first(),
        timeout=60,
        failure=lambda: f"the worker issued no invoice within 60 s; its output:\n{celery_worker_process.log_tail()}",
    )
    run = wait_until(
        lambda: InvoiceRun.objects.filter(status=InvoiceRun.Status.DONE).first(),
        timeout=30,
        failure=lambda: f"the invoicing run did not finish; its output:\n{celery_worker_process.log_tail()}",
    )
    assert invoice.period_start == last_month().start and invoice.total == Decimal("25.00")
    assert invoice.lines.get().days == invoice.lines.get().days_in_period
    assert run.issued == [invoice.number]
    assert invoice.issue_date == timezone.localdate()
    # Issuing asked the worker to typeset the PDF (after the commit); it keeps it with the invoice.
    kept = wait_until(
        lambda: InvoicePdf.objects.filter(invoice=invoice).first(),
        timeout=60,
        failure=lambda: f"the worker kept no PDF within 60 s; its output:\n{celery_worker_process.log_tail()}",
    )
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(bytes(kept.content))).pages)
    assert invoice.number in text and "25.00 EUR" in text
