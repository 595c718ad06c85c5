"""Celery tasks of billing: thin and idempotent (an invoice already issued is found, never issued twice)."""

from celery import shared_task
from django.db import OperationalError

from . import documents, services
from .models import Invoice
from .periods import last_month


@shared_task(
    name="billing.tasks.process_invoice_run",
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def process_invoice_run(run_id: int) -> None:
    """Issue the invoices of a run requested in the portal."""
    services.process_invoice_run(run_id=run_id)


@shared_task(
    name="billing.tasks.issue_last_month_invoices",
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def issue_last_month_invoices() -> int:
    """Celery beat, on the 1st: last month's invoice for every institution with an accepted contract in force then."""
    run = services.scheduled_run(last_month())
    return services.process_invoice_run(run_id=run.pk).pk


@shared_task(
    name="billing.tasks.render_invoice_pdf", ignore_result=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3
)
def render_invoice_pdf(invoice_id: int) -> None:
    """Render and keep the PDF of an issued invoice (seconds for a long one: never inside a web request)."""
    invoice = Invoice.objects.filter(pk=invoice_id, issued_at__isnull=False).first()
    if invoice is not None:
        documents.ensure_pdf(invoice)
