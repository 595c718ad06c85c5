"""An issued invoice or credit note as a PDF (WeasyPrint, from templates/billing/invoice_pdf.html) and as CSV.

Both are rendered from the invoice's own rows (which never change), including the provider's and the
institution's details as they were at issue, so the same invoice always renders the same figures.
"""

from __future__ import annotations

import csv
import hashlib
import io

from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from .models import Invoice, InvoicePdf
from .selectors import lines_by_contract

ROUNDING_RULE = (
    "Amount = points x rate x days / days in the month, plus GB-months x storage price where storage is charged; "
    "each is rounded half up to the cent, and the line's amount is their sum. Tax is computed on the subtotal "
    "and rounded half up to the cent."
)

CSV_COLUMNS = [
    "row",
    "invoice",
    "contract",
    "mode",
    "object_kind",
    "object",
    "from",
    "to",
    "days",
    "days_in_month",
    "points",
    "rate",
    "gb_months",
    "storage_price",
    "backup_amount",
    "storage_amount",
    "amount",
    "currency",
    "note",
]


def document_title(invoice: Invoice) -> str:
    return f"{invoice.get_kind_display()} {invoice.number}"


def filename(invoice: Invoice, extension: str) -> str:
    return f"{invoice.number}.{extension}"


def context_for(invoice: Invoice) -> dict:
    return {
        "invoice": invoice,
        "title": document_title(invoice),
        "groups": lines_by_contract(invoice),
        "provider": invoice.provider,
        "customer": invoice.customer,
        "rounding_rule": ROUNDING_RULE,
    }


def render_pdf(invoice: Invoice) -> bytes:
    # Imported here: WeasyPrint takes most of a second to import, which web and command start-up need not pay.
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    class NoFetching(URLFetcher):
        """The template carries its own styles: nothing is fetched, from the network or the disk, while rendering."""

        def fetch(self, url, headers=None):
            raise ValueError(f"invoice PDFs load no external resources ({url[:80]})")

    html = render_to_string("billing/invoice_pdf.html", context_for(invoice))
    return HTML(string=html, url_fetcher=NoFetching()).write_pdf()


def stored_pdf(invoice: Invoice) -> bytes | None:
    row = InvoicePdf.objects.filter(invoice=invoice).only("content").first()
    return bytes(row.content) if row else None


def ensure_pdf(invoice: Invoice) -> bytes:
    """The invoice's PDF as kept; rendered and kept first if it is not yet (safe to call twice at once)."""
    pdf = stored_pdf(invoice)
    if pdf is not None:
        return pdf
    pdf = render_pdf(invoice)
    try:
        with transaction.atomic():
            InvoicePdf.objects.create(invoice=invoice, content=pdf, sha256=hashlib.sha256(pdf).hexdigest(), size=len(pdf))
    except IntegrityError:
        return stored_pdf(invoice)  # another worker kept its rendering first: serve that one, always the same bytes
    return pdf


def render_csv(invoice: Invoice, *, with_labels: bool = False) -> str:
    """One 'line' row per object of backup, a 'subtotal' row per contract, then 'tax' (if any) and 'total'.

    Objects are named by their reference ('patient 12'); with_labels adds their readable label (patient's name and
    ID, study description) in a last column, for the institution's own admins.
    """
    columns = [*CSV_COLUMNS, "object_label"] if with_labels else CSV_COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    blank = dict.fromkeys(columns, "")
    for group in lines_by_contract(invoice):
        for line in group.lines:
            writer.writerow(
                [
                    "line",
                    invoice.number,
                    line.contract_label,
                    line.mode,
                    line.object_kind,
                    line.object_ref,
                    line.service_start.isoformat(),
                    line.service_end.isoformat(),
                    line.days,
                    line.days_in_period,
                    line.accounting_points,
                    line.rate,
                    line.gb_months,
                    "" if line.storage_price is None else line.storage_price,
                    line.backup_amount,
                    line.storage_amount,
                    line.amount,
                    invoice.currency,
                    line.note,
                    *([line.object_label] if with_labels else []),
                ]
            )
        writer.writerow(_summary(blank, "subtotal", invoice, group.subtotal, contract=group.label, mode=group.mode))
    if invoice.tax_rate:
        writer.writerow(_summary(blank, "tax", invoice, invoice.tax_amount, note=f"{invoice.tax_label} {invoice.tax_rate}%"))
    writer.writerow(_summary(blank, "total", invoice, invoice.total))
    return out.getvalue()


def _summary(blank: dict, row: str, invoice: Invoice, amount, **values) -> list:
    cells = {**blank, "row": row, "invoice": invoice.number, "amount": amount, "currency": invoice.currency, **values}
    return [cells[column] for column in blank]
