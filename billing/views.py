"""Portal pages of billing: invoices (institution admins their own, provider staff all), revenue, tariffs, invoicing.

An invoice named by id in a URL is looked up through the scoped selector and `get_visible`, so another
institution's invoice answers 404. Services make every change and audit it; their refusals become form errors.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from backup.models import BackupMode
from subscribers import audit
from subscribers.access import get_visible
from subscribers.decorators import admin_required, provider_staff_required
from subscribers.forms import add_service_error
from subscribers.selectors import institutions_visible_to

from . import documents, selectors, services, tariffs
from .forms import CreditNoteForm, EndTariffForm, GenerateInvoicesForm, InvoiceFilterForm, TariffForm
from .models import Invoice
from .tasks import render_invoice_pdf

PAGE_SIZE = 50
# A PDF not yet rendered by the worker is rendered in the request only when this short (WeasyPrint: ~10 ms a line).
INLINE_PDF_MAX_LINES = 60


def _posted(request):
    return request.POST if request.method == "POST" else None


def _invoice(request, pk) -> Invoice:
    principal = request.principal
    return get_visible(selectors.invoices_visible_to(principal), principal, pk=pk)


@admin_required
def invoice_list(request):
    principal = request.principal
    institutions = institutions_visible_to(principal).order_by("name") if principal.is_provider_staff else None
    form = InvoiceFilterForm(request.GET or None, institutions=institutions)
    invoices = selectors.invoices_visible_to(principal)
    if form.is_bound and form.is_valid():
        if form.cleaned_data.get("period"):
            invoices = invoices.filter(period_start=form.cleaned_data["period"].start)
        if form.cleaned_data.get("institution"):
            invoices = invoices.filter(institution=form.cleaned_data["institution"])
    page = Paginator(invoices.order_by("-period_start", "-year", "-sequence"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "billing/invoice_list.html", {"form": form, "page": page, "invoices": page.object_list})


@admin_required
def invoice_detail(request, pk):
    invoice = _invoice(request, pk)
    context = {
        "invoice": invoice,
        "groups": selectors.lines_by_contract(invoice),
        "credit_note": Invoice.objects.filter(credited_invoice=invoice).first(),
        "rounding_rule": documents.ROUNDING_RULE,
        # The institution's own admins see who and what each object is; provider staff do not read patient data.
        "show_labels": not request.principal.is_provider_staff,
    }
    if request.principal.is_provider_staff and not invoice.is_credit_note and context["credit_note"] is None:
        context["credit_form"] = CreditNoteForm()
    return render(request, "billing/invoice_detail.html", context)


def _download(request, invoice: Invoice, content: bytes | str, content_type: str, extension: str) -> HttpResponse:
    audit.record(action=f"invoice.download_{extension}", request=request, institution=invoice.institution, obj=invoice)
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{documents.filename(invoice, extension)}"'
    return response


@admin_required
def invoice_pdf(request, pk):
    invoice = _invoice(request, pk)
    pdf = documents.stored_pdf(invoice)
    if pdf is None and invoice.lines.count() <= INLINE_PDF_MAX_LINES:
        pdf = documents.ensure_pdf(invoice)
    if pdf is None:
        # A long invoice takes a worker seconds to typeset; ask it (again: the task does it once) and say when to come back.
        render_invoice_pdf.delay(invoice.pk)
        response = render(request, "billing/pdf_pending.html", {"invoice": invoice}, status=202)
        response["Retry-After"] = "30"
        return response
    return _download(request, invoice, pdf, "application/pdf", "pdf")


@admin_required
def invoice_csv(request, pk):
    invoice = _invoice(request, pk)
    csv_text = documents.render_csv(invoice, with_labels=not request.principal.is_provider_staff)
    return _download(request, invoice, csv_text, "text/csv; charset=utf-8", "csv")


@provider_staff_required
@require_POST
def invoice_credit(request, pk):
    invoice = _invoice(request, pk)
    form = CreditNoteForm(request.POST)
    if form.is_valid():
        try:
            note = services.issue_credit_note(actor=request.principal, invoice=invoice, reason=form.cleaned_data["reason"])
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"Issued credit note {note.number} for {invoice.number}.")
            return redirect("billing-invoice", pk=note.pk)
    else:
        messages.error(request, "Say why the invoice is credited.")
    return redirect("billing-invoice", pk=invoice.pk)


@provider_staff_required
def billing_overview(request):
    principal = request.principal
    institutions = institutions_visible_to(principal).order_by("name")
    form = GenerateInvoicesForm(_posted(request), institutions=institutions)
    if form.is_bound and form.is_valid():
        try:
            run = services.request_invoice_run(
                actor=principal, period=form.cleaned_data["period"], institution=form.cleaned_data["institution"]
            )
        except ValidationError as error:
            add_service_error(form, error, {"period_not_ended": "period"})
        else:
            scope = run.institution.name if run.institution else "every institution with a contract"
            messages.success(request, f"Invoicing {run.period_start:%Y-%m} for {scope} is queued; the list below shows its result.")
            return redirect("billing-overview")
    context = {
        "form": form,
        "revenue": selectors.revenue_by_month_and_mode(principal),
        "modes": BackupMode.choices,
        "runs": selectors.invoice_runs_visible_to(principal)[:10],
    }
    return render(request, "billing/overview.html", context)


@provider_staff_required
def tariff_list(request):
    principal = request.principal
    form = TariffForm(_posted(request))
    if form.is_bound and form.is_valid():
        try:
            tariff = tariffs.create_tariff(actor=principal, **form.cleaned_data)
        except ValidationError as error:
            add_service_error(form, error, form.service_fields)
        else:
            messages.success(request, f"Added the tariff: {tariff}.")
            return redirect("billing-tariffs")
    return render(
        request,
        "billing/tariffs.html",
        {"form": form, "tariffs": selectors.tariffs_visible_to(principal), "end_form": EndTariffForm()},
    )


@provider_staff_required
@require_POST
def tariff_end(request, pk):
    principal = request.principal
    tariff = get_visible(selectors.tariffs_visible_to(principal), principal, pk=pk)
    form = EndTariffForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the last day the tariff applies.")
        return redirect("billing-tariffs")
    try:
        tariffs.end_tariff(actor=principal, tariff=tariff, last_day=form.cleaned_data["last_day"])
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"The tariff now ends on {form.cleaned_data['last_day']:%Y-%m-%d}.")
    return redirect("billing-tariffs")
