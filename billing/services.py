"""Use cases that change billing state: issue an invoice, issue a credit note, record an object's removal, invoicing runs.

Each runs in one transaction and audits itself; a refusal is a ValidationError with a message a person can act on,
and changes nothing (not even the number counter).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backup.models import BackupObject
from subscribers import audit
from subscribers.access import OPERATOR, Principal, principal_for_user
from subscribers.models import Institution

from . import numbering
from .accounting import Statement, account_institution, cents, institutions_with_contracts
from .models import Invoice, InvoiceLine, InvoiceRun, ObjectRemoval
from .periods import Period, require_ended


def provider_details() -> dict:
    return {
        "name": settings.BILLING_PROVIDER_NAME,
        "address": settings.BILLING_PROVIDER_ADDRESS,
        "email": settings.BILLING_PROVIDER_EMAIL,
        "tax_id": settings.BILLING_PROVIDER_TAX_ID,
        "bank": settings.BILLING_PROVIDER_BANK,
    }


def customer_details(institution: Institution) -> dict:
    return {
        "name": institution.name,
        "slug": institution.slug,
        "address": institution.address,
        "contact_name": institution.contact_name,
        "contact_email": institution.contact_email,
    }


def object_reference(obj: BackupObject) -> str:
    """How an invoice names an object of backup without patient data: by its number in the archive."""
    if obj.kind == BackupObject.Kind.PATIENT:
        return f"patient {obj.key}"
    if obj.kind == BackupObject.Kind.STUDY:
        return f"study {obj.key}"
    if obj.kind == BackupObject.Kind.ACQUIRING_INSTITUTION:
        return f"acquiring institution {obj.key or obj.label}"
    return "everything the contract covers"


def current_invoice(institution: Institution, period: Period) -> Invoice | None:
    """The latest invoice of the institution for the period (a credited one included), or None."""
    return (
        Invoice.objects.filter(institution=institution, period_start=period.start, kind=Invoice.Kind.INVOICE)
        .select_related("credit_note")
        .order_by("-revision")
        .first()
    )


def _is_credited(invoice: Invoice) -> bool:
    return hasattr(invoice, "credit_note")


def _tax(subtotal: Decimal) -> tuple[Decimal, Decimal]:
    rate = Decimal(settings.BILLING_TAX_RATE)
    return rate, cents(subtotal * rate / 100)


def _lines_from(statement: Statement, invoice: Invoice) -> list[InvoiceLine]:
    lines = []
    for position, charge in enumerate(statement.charges, start=1):
        obj = charge.backup_object
        lines.append(
            InvoiceLine(
                invoice=invoice,
                position=position,
                contract=charge.contract,
                contract_label=str(charge.contract)[:300],
                backup_object=obj,
                mode=charge.contract.mode,
                object_kind=obj.kind,
                object_ref=object_reference(obj)[:300],
                object_label=(str(obj) or obj.get_kind_display())[:300],
                service_start=charge.start,
                service_end=charge.end,
                days=charge.days,
                days_in_period=charge.days_in_period,
                accounting_points=charge.accounting_points,
                rate=charge.rate,
                gb_months=charge.gb_months,
                storage_price=charge.storage_price,
                backup_amount=charge.backup_amount,
                storage_amount=charge.storage_amount,
                amount=charge.amount,
                note=charge.note[:300],
            )
        )
    return lines


def _finish(invoice: Invoice, lines: list[InvoiceLine], now: datetime) -> Invoice:
    """Add the lines, then mark the invoice issued: from here on nothing of it changes. A worker renders its PDF."""
    from .tasks import render_invoice_pdf

    InvoiceLine.objects.bulk_create(lines)
    invoice.issued_at = now
    invoice.save(update_fields=["issued_at"])
    transaction.on_commit(lambda: render_invoice_pdf.delay(invoice.pk))
    return invoice


@transaction.atomic
def issue_invoice(*, actor: Principal, institution: Institution, period: Period, today: date | None = None) -> tuple[Invoice, bool]:
    """Issue the institution's invoice for a month that is over, or return the one already issued.

    Returns (invoice, created). Generating again for the same institution and month returns the same invoice;
    only after it was credited does it issue the next revision (the corrected invoice).
    """
    actor.require_provider_staff()
    today = today or timezone.localdate()
    require_ended(period, today)
    # Take the number lock first: a concurrent issue for the same institution and month waits here, then finds
    # the invoice the other one committed instead of making a second.
    counter = numbering.lock_counter(today.year)
    existing = current_invoice(institution, period)
    if existing is not None and not _is_credited(existing):
        return existing, False
    statement = account_institution(institution, period)
    subtotal = statement.subtotal
    tax_rate, tax_amount = _tax(subtotal)
    number = numbering.allocate(counter)
    now = timezone.now()
    invoice = Invoice.objects.create(
        kind=Invoice.Kind.INVOICE,
        number=str(number),
        prefix=number.prefix,
        year=number.year,
        sequence=number.sequence,
        institution=institution,
        period_start=period.start,
        period_end=period.end,
        revision=existing.revision + 1 if existing else 1,
        currency=statement.currency,
        subtotal=subtotal,
        tax_rate=tax_rate,
        tax_label=settings.BILLING_TAX_LABEL if tax_rate else "",
        tax_amount=tax_amount,
        total=subtotal + tax_amount,
        issue_date=today,
        due_date=today + timedelta(days=settings.BILLING_PAYMENT_DAYS),
        issued_by=actor.user,
        issued_by_label=actor.label()[:200],
        provider=provider_details(),
        customer=customer_details(institution),
    )
    _finish(invoice, _lines_from(statement, invoice), now)
    audit.record(
        action="invoice.issue",
        principal=actor,
        institution=institution,
        obj=invoice,
        number=invoice.number,
        period=period.label,
        total=str(invoice.total),
        currency=invoice.currency,
        lines=len(statement.charges),
        revision=invoice.revision,
    )
    return invoice, True


@transaction.atomic
def issue_credit_note(*, actor: Principal, invoice: Invoice, reason: str, today: date | None = None) -> Invoice:
    """Cancel an issued invoice with a credit note of the opposite amounts that refers to it (its own number)."""
    actor.require_provider_staff()
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why the invoice is credited; the reason is printed on the credit note.", code="reason_required")
    if len(reason) > 2000:
        raise ValidationError("Keep the reason under 2,000 characters.", code="reason_too_long")
    today = today or timezone.localdate()
    counter = numbering.lock_counter(today.year)
    invoice = Invoice.objects.select_related("institution").get(pk=invoice.pk)
    if invoice.is_credit_note:
        raise ValidationError(f"{invoice.number} is itself a credit note; only invoices are credited.", code="not_an_invoice")
    already = Invoice.objects.filter(credited_invoice=invoice).first()
    if already is not None:
        raise ValidationError(f"Invoice {invoice.number} was already credited by {already.number}.", code="already_credited")
    number = numbering.allocate(counter)
    now = timezone.now()
    note = Invoice.objects.create(
        kind=Invoice.Kind.CREDIT_NOTE,
        number=str(number),
        prefix=number.prefix,
        year=number.year,
        sequence=number.sequence,
        institution=invoice.institution,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        revision=invoice.revision,
        credited_invoice=invoice,
        reason=reason,
        currency=invoice.currency,
        subtotal=-invoice.subtotal,
        tax_rate=invoice.tax_rate,
        tax_label=invoice.tax_label,
        tax_amount=-invoice.tax_amount,
        total=-invoice.total,
        issue_date=today,
        due_date=today,
        issued_by=actor.user,
        issued_by_label=actor.label()[:200],
        provider=provider_details(),
        customer=invoice.customer,
    )
    lines = []
    for line in invoice.lines.order_by("position"):
        line.pk = None
        line.invoice = note
        line.backup_amount, line.storage_amount, line.amount = -line.backup_amount, -line.storage_amount, -line.amount
        lines.append(line)
    _finish(note, lines, now)
    audit.record(
        action="invoice.credit",
        principal=actor,
        institution=invoice.institution,
        obj=note,
        number=note.number,
        credits=invoice.number,
        total=str(note.total),
        reason=reason[:500],
    )
    return note


@transaction.atomic
def record_object_removal(*, actor: Principal, backup_object: BackupObject, removed_at: datetime) -> ObjectRemoval:
    """Record when an object of backup left its contract; accounting counts it up to and including that day."""
    actor.require_provider_staff()
    if timezone.is_naive(removed_at):
        raise ValidationError("The removal time must carry a time zone.", code="naive_time")
    if removed_at < backup_object.created_at:
        raise ValidationError("An object cannot be removed before it was added.", code="removed_before_added")
    if ObjectRemoval.objects.filter(backup_object=backup_object).exists():
        raise ValidationError(f"{backup_object} is already recorded as removed.", code="already_removed")
    removal = ObjectRemoval.objects.create(backup_object=backup_object, removed_at=removed_at, recorded_by=actor.user)
    audit.record(
        action="billing.object_removed",
        principal=actor,
        institution=backup_object.contract.institution,
        obj=backup_object,
        removed_at=removed_at.isoformat(),
    )
    return removal


# --- Invoicing runs (Celery) -------------------------------------------------------------------------------------


@transaction.atomic
def request_invoice_run(
    *, actor: Principal, period: Period, institution: Institution | None = None, today: date | None = None
) -> InvoiceRun:
    """Queue the invoicing of a month (for every institution with a contract, or one) for a worker."""
    from .tasks import process_invoice_run

    actor.require_provider_staff()
    require_ended(period, today)
    run = InvoiceRun.objects.create(
        period_start=period.start, institution=institution, trigger=InvoiceRun.Trigger.PORTAL, requested_by=actor.user
    )
    audit.record(
        action="invoice.run_requested",
        principal=actor,
        institution=institution,
        obj=run,
        period=period.label,
        scope=institution.slug if institution else "all",
    )
    transaction.on_commit(lambda: process_invoice_run.delay(run.pk))
    return run


def scheduled_run(period: Period) -> InvoiceRun:
    """The monthly run of a period (one per period: the beat task finds it again if it is sent twice)."""
    run, _ = InvoiceRun.objects.get_or_create(
        period_start=period.start, institution=None, trigger=InvoiceRun.Trigger.SCHEDULE, defaults={"status": InvoiceRun.Status.QUEUED}
    )
    return run


def process_invoice_run(*, run_id: int) -> InvoiceRun:
    """Issue (or find) the invoice of every institution of the run; each in its own transaction. Safe to run again."""
    with transaction.atomic():
        run = InvoiceRun.objects.select_for_update(of=("self",)).select_related("institution", "requested_by").get(pk=run_id)
        if run.status == InvoiceRun.Status.DONE:
            return run
        run.status, run.started_at = InvoiceRun.Status.RUNNING, timezone.now()
        run.save(update_fields=["status", "started_at"])
    actor = OPERATOR
    if run.requested_by is not None:
        actor = principal_for_user(run.requested_by, None)
    period = Period(run.period_start)
    issued, existing, refused = [], [], []
    try:
        targets = [run.institution] if run.institution else institutions_with_contracts(period)
        for institution in targets:
            try:
                invoice, created = issue_invoice(actor=actor, institution=institution, period=period)
            except ValidationError as error:
                refused.append({"institution": institution.slug, "reason": " ".join(error.messages)})
            else:
                (issued if created else existing).append(invoice.number)
    except Exception as error:
        InvoiceRun.objects.filter(pk=run.pk).update(
            status=InvoiceRun.Status.FAILED,
            finished_at=timezone.now(),
            issued=issued,
            existing=existing,
            refused=refused,
            message=f"{type(error).__name__}: {error}"[:2000],
        )
        raise
    parts = [f"{len(issued)} issued", f"{len(existing)} already issued"]
    if refused:
        parts.append(f"{len(refused)} refused")
    if not targets:
        parts = ["no institution had an accepted contract in force in the period"]
    InvoiceRun.objects.filter(pk=run.pk).update(
        status=InvoiceRun.Status.DONE,
        finished_at=timezone.now(),
        issued=issued,
        existing=existing,
        refused=refused,
        message=", ".join(parts) + ".",
    )
    run.refresh_from_db()
    return run
