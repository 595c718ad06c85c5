"""Billing in the portal, through the Django test client: admins see their institution's invoices, staff everything."""

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pypdf import PdfReader

from backup.models import BackupMode
from billing import views
from billing.models import Invoice, InvoiceImmutable, InvoicePdf, InvoiceRun, Tariff
from billing.periods import Period, last_month
from billing.services import issue_invoice, process_invoice_run
from billing.tasks import render_invoice_pdf
from subscribers.models import AuditEvent
from tests.billing.builders import accepted_contract, at, backup_object
from tests.conftest import login
from tests.factories import member

MARCH_2025 = Period(date(2025, 3, 1))


def _invoice_for(operator, institution, period=MARCH_2025, label="Everything"):
    contract = accepted_contract(
        institution, mode=BackupMode.ALL_AT_TIME, points="10", rate="2.5", period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    backup_object(contract, label, created_at=at(2025, 2, 11))
    invoice, _ = issue_invoice(actor=operator, institution=institution, period=period, today=date(2026, 4, 2))
    return invoice


@pytest.fixture
def invoice_a(operator, inst_a):
    return _invoice_for(operator, inst_a, label="Alpha everything")


@pytest.fixture
def invoice_b(operator, inst_b):
    return _invoice_for(operator, inst_b, label="Beta everything")


@pytest.fixture
def staff_client(client, staff_user):
    return login(client, staff_user)


def test_admin_lists_only_own_institutions_invoices(client_a, invoice_a, invoice_b, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = client_a.get(reverse("billing-invoices"))

    assert response.status_code == 200
    body = response.content.decode()
    assert invoice_a.number in body and "25.00 EUR" in body
    assert invoice_b.number not in body


def test_invoice_list_needs_no_more_queries_for_more_invoices(client, staff_user, operator, inst_a):
    login(client, staff_user)
    _invoice_for(operator, inst_a)
    client.get(reverse("billing-invoices"))  # warm up the session
    with CaptureQueriesContext(connection) as one_invoice:
        client.get(reverse("billing-invoices"))
    for month in (4, 5, 6):
        issue_invoice(actor=operator, institution=inst_a, period=Period(date(2025, month, 1)), today=date(2026, 4, 2))

    with CaptureQueriesContext(connection) as four_invoices:
        response = client.get(reverse("billing-invoices"))

    assert response.content.decode().count('href="/billing/invoices/') >= 4
    assert len(four_invoices.captured_queries) == len(one_invoice.captured_queries)


def test_admin_opens_detail_pdf_and_csv_of_own_invoice(client_a, invoice_a):
    detail = client_a.get(reverse("billing-invoice", args=[invoice_a.pk]))
    pdf = client_a.get(reverse("billing-invoice-pdf", args=[invoice_a.pk]))
    csv_response = client_a.get(reverse("billing-invoice-csv", args=[invoice_a.pk]))

    assert detail.status_code == 200
    assert "Alpha everything" in detail.content.decode() and "25.00 EUR" in detail.content.decode()
    assert "Issue a credit note" not in detail.content.decode()  # that is for provider staff
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == f'attachment; filename="{invoice_a.number}.pdf"'
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert invoice_a.number in text and "25.00 EUR" in text
    rows = list(csv.DictReader(io.StringIO(csv_response.content.decode())))
    assert [r["amount"] for r in rows if r["row"] == "total"] == ["25.00"]
    assert set(AuditEvent.objects.filter(object_id=str(invoice_a.pk)).values_list("action", flat=True)) >= {
        "invoice.download_pdf",
        "invoice.download_csv",
    }


def test_a_long_invoices_pdf_is_typeset_by_the_worker_and_then_served_as_kept(client_a, invoice_a, monkeypatch):
    monkeypatch.setattr(views, "INLINE_PDF_MAX_LINES", 0)  # as if the invoice were too long to typeset in a request
    url = reverse("billing-invoice-pdf", args=[invoice_a.pk])

    pending = client_a.get(url)

    assert pending.status_code == 202 and pending["Retry-After"] == "30"
    assert "is being prepared" in pending.content.decode()
    assert not InvoicePdf.objects.exists()

    render_invoice_pdf(invoice_a.pk)  # what the worker does with the task the request queued
    first, second = client_a.get(url), client_a.get(url)

    assert first.status_code == 200 and first["Content-Type"] == "application/pdf"
    assert first.content == second.content == bytes(InvoicePdf.objects.get(invoice=invoice_a).content)
    kept = InvoicePdf.objects.get()
    kept.content = b"%PDF-forged"
    with pytest.raises(InvoiceImmutable):
        kept.save()


@pytest.mark.parametrize("url_name", ["billing-invoice", "billing-invoice-pdf", "billing-invoice-csv"])
def test_another_institutions_invoice_is_not_found(client_a, invoice_b, url_name):
    response = client_a.get(reverse(url_name, args=[invoice_b.pk]))

    assert response.status_code == 404
    assert invoice_b.number not in response.content.decode()


@pytest.mark.parametrize("url_name", ["billing-invoices", "billing-overview", "billing-tariffs"])
def test_members_who_are_not_admins_are_forbidden(client, clinician_a, invoice_a, url_name):
    login(client, clinician_a.user)

    assert client.get(reverse(url_name)).status_code == 403


def test_non_admin_gets_403_for_an_invoice_of_their_own_institution(client, clinician_a, invoice_a):
    login(client, clinician_a.user)
    assert client.get(reverse("billing-invoice-pdf", args=[invoice_a.pk])).status_code == 403


@pytest.mark.parametrize("url_name", ["billing-overview", "billing-tariffs"])
def test_provider_pages_are_forbidden_to_institution_admins(client_a, url_name):
    assert client_a.get(reverse(url_name)).status_code == 403
    assert client_a.post(reverse(url_name), {"period": "2025-03"}).status_code == 403
    assert not InvoiceRun.objects.exists() and not Tariff.objects.exists()


def test_patients_are_named_to_their_institutions_admins_and_numbered_to_provider_staff(client, operator, inst_a, admin_a, staff_user):
    contract = accepted_contract(
        inst_a, mode=BackupMode.PER_PATIENT, points="1", rate="1", period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    patient = backup_object(contract, "DOE^JANE (PID-77)", created_at=at(2025, 2, 11))
    invoice, _ = issue_invoice(actor=operator, institution=inst_a, period=MARCH_2025, today=date(2026, 4, 2))
    urls = [reverse(name, args=[invoice.pk]) for name in ("billing-invoice", "billing-invoice-csv")]

    login(client, staff_user)
    staff_pages = [client.get(url).content.decode() for url in urls]
    login(client, admin_a.user)
    admin_pages = [client.get(url).content.decode() for url in urls]

    assert all(f"patient {patient.key}" in page and "DOE^JANE" not in page for page in staff_pages)
    assert all(f"patient {patient.key}" in page and "DOE^JANE (PID-77)" in page for page in admin_pages)


def test_staff_see_every_invoice_and_filter_by_institution(staff_client, invoice_a, invoice_b):
    everything = staff_client.get(reverse("billing-invoices")).content.decode()
    only_beta = staff_client.get(reverse("billing-invoices"), {"institution": "beta"}).content.decode()

    assert invoice_a.number in everything and invoice_b.number in everything
    assert invoice_b.number in only_beta and invoice_a.number not in only_beta


def test_staff_revenue_summary_per_month_and_mode(staff_client, operator, invoice_a, inst_b):
    contract = accepted_contract(
        inst_b, mode=BackupMode.PER_PATIENT, points="1", rate="1.5", period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    backup_object(contract, "P1", created_at=at(2025, 2, 11))
    backup_object(contract, "P2", created_at=at(2025, 2, 11))
    issue_invoice(actor=operator, institution=inst_b, period=MARCH_2025, today=date(2026, 4, 2))

    response = staff_client.get(reverse("billing-overview"))

    assert response.status_code == 200
    row = response.context["revenue"][0]
    assert row.month == date(2025, 3, 1) and row.currency == "EUR"
    assert row.by_mode[BackupMode.ALL_AT_TIME] == Decimal("25.00")
    assert row.by_mode[BackupMode.PER_PATIENT] == Decimal("3.00")
    assert row.total == Decimal("28.00")
    assert "28.00 EUR" in response.content.decode()


def test_staff_generate_invoices_for_a_month_in_the_background(staff_client, staff_user, inst_a, inst_b):
    contract = accepted_contract(
        inst_a, mode=BackupMode.ALL_AT_TIME, points="10", rate="2.5", period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))

    response = staff_client.post(reverse("billing-overview"), {"period": "2025-03", "institution": ""})

    assert response.status_code == 302
    run = InvoiceRun.objects.get()
    assert (run.status, run.period_start, run.requested_by) == (InvoiceRun.Status.QUEUED, date(2025, 3, 1), staff_user)
    assert not Invoice.objects.exists()  # nothing issued inside the request

    # What the worker does with the queued run (the real worker is exercised in test_tasks.py).
    run = process_invoice_run(run_id=run.pk)

    assert run.status == InvoiceRun.Status.DONE and len(run.issued) == 1
    invoice = Invoice.objects.get()
    assert (invoice.institution, invoice.total, invoice.issued_by) == (inst_a, Decimal("25.00"), staff_user)
    page = staff_client.get(reverse("billing-overview")).content.decode()
    assert "1 issued, 0 already issued." in page


def test_generating_a_month_that_has_not_ended_is_refused_on_the_form(staff_client):
    response = staff_client.post(reverse("billing-overview"), {"period": last_month().label[:4] + "-13"})
    assert response.status_code == 200 and "written YYYY-MM" in response.content.decode()

    from django.utils import timezone

    this_month = f"{timezone.localdate():%Y-%m}"
    response = staff_client.post(reverse("billing-overview"), {"period": this_month})

    assert response.status_code == 200
    assert "has not ended yet" in response.content.decode()
    assert not InvoiceRun.objects.exists()


def test_staff_issue_a_credit_note_from_the_invoice_page(staff_client, invoice_a):
    page = staff_client.get(reverse("billing-invoice", args=[invoice_a.pk])).content.decode()
    assert "Issue a credit note" in page

    response = staff_client.post(reverse("billing-invoice-credit", args=[invoice_a.pk]), {"reason": "Billed the wrong month"})

    note = Invoice.objects.get(kind=Invoice.Kind.CREDIT_NOTE)
    assert response.status_code == 302 and response["Location"] == reverse("billing-invoice", args=[note.pk])
    assert note.credited_invoice == invoice_a and note.total == Decimal("-25.00")
    assert "Cancelled by credit note" in staff_client.get(reverse("billing-invoice", args=[invoice_a.pk])).content.decode()


def test_admins_cannot_issue_credit_notes(client_a, invoice_a):
    assert client_a.post(reverse("billing-invoice-credit", args=[invoice_a.pk]), {"reason": "please"}).status_code == 403
    assert Invoice.objects.count() == 1


def test_staff_add_and_end_tariffs_on_the_tariffs_page(staff_client):
    url = reverse("billing-tariffs")
    response = staff_client.post(
        url,
        {"mode": BackupMode.PER_PATIENT, "accounting_points": "0.5", "rate": "2", "currency": "EUR", "valid_from": "2025-01-01"},
    )
    assert response.status_code == 302
    tariff = Tariff.objects.get()

    refused = staff_client.post(
        url, {"mode": BackupMode.PER_PATIENT, "accounting_points": "1", "rate": "0", "currency": "EUR", "valid_from": "2026-01-01"}
    )
    overlapping = staff_client.post(
        url, {"mode": BackupMode.PER_PATIENT, "accounting_points": "1", "rate": "3", "currency": "EUR", "valid_from": "2025-06-01"}
    )

    assert "The rate must be more than zero" in refused.content.decode()
    assert "overlap the per patient tariff from 2025-01-01" in overlapping.content.decode()
    assert Tariff.objects.count() == 1
    page = staff_client.get(url).content.decode()
    assert "Per patient" in page and "0.5" in page and "open-ended" in page

    from django.utils import timezone

    staff_client.post(reverse("billing-tariff-end", args=[tariff.pk]), {"last_day": f"{timezone.localdate():%Y-%m-%d}"})
    tariff.refresh_from_db()
    assert tariff.valid_until == timezone.localdate()


def test_portal_navigation_shows_billing_to_whom_it_concerns(client, admin_a, clinician_a, staff_user):
    login(client, admin_a.user)
    assert reverse("billing-invoices") in client.get(reverse("manage-members")).content.decode()
    login(client, clinician_a.user)
    assert reverse("billing-invoices") not in client.get(reverse("my-tokens")).content.decode()
    login(client, staff_user)
    staff_page = client.get(reverse("worker-status")).content.decode()
    assert reverse("billing-overview") in staff_page and reverse("billing-tariffs") in staff_page


def test_admin_of_two_institutions_sees_the_active_ones_invoices(client, operator, inst_a, inst_b, invoice_a, invoice_b):
    both = member(inst_a, "two-hats", ["admin"])
    member(inst_b, "two-hats", ["admin"])
    both.user.refresh_from_db()
    login(client, both.user)
    client.post(reverse("switch-institution"), {"institution": inst_b.pk})

    body = client.get(reverse("billing-invoices")).content.decode()

    assert invoice_b.number in body and invoice_a.number not in body
    assert client.get(reverse("billing-invoice", args=[invoice_a.pk])).status_code == 404
