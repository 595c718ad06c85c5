"""The invoice as a PDF (WeasyPrint) and as CSV: the numbers a person reads are the numbers issued."""

import csv
import io
import shutil
import subprocess
from datetime import date
from decimal import Decimal

import pytest
from PIL import Image
from pypdf import PdfReader

from backup.models import BackupMode, BackupSet
from billing.documents import render_csv, render_pdf
from billing.periods import Period
from billing.services import issue_credit_note, issue_invoice
from tests.billing.builders import accepted_contract, at, backup_object, backup_set

MARCH_2025 = Period(date(2025, 3, 1))


def _pdf_text(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


@pytest.fixture
def invoice(operator, inst_a, settings):
    settings.BILLING_PROVIDER_NAME = "Archive Services Ltd"
    settings.BILLING_PROVIDER_ADDRESS = "9 Provider Way\nCapital City"
    settings.BILLING_TAX_RATE = Decimal("19")
    nightly = accepted_contract(
        inst_a,
        mode=BackupMode.ALL_AT_TIME,
        points="10",
        rate="2.5",
        period_start=date(2025, 2, 1),
        accepted_at=at(2025, 2, 10),
        title="Nightly full backup",
    )
    backup_object(nightly, "Everything of Alpha Hospital", created_at=at(2025, 2, 11))
    patients = accepted_contract(
        inst_a,
        mode=BackupMode.PER_PATIENT,
        points="2.5",
        rate="3.3333",
        period_start=date(2025, 2, 1),
        accepted_at=at(2025, 2, 10),
        title="Per patient",
    )
    backup_object(patients, "DOE^JANE", created_at=at(2025, 1, 5))
    backup_object(patients, "ROE^RICHARD", created_at=at(2025, 3, 11))
    failing = backup_object(patients, "POE^EDGAR", created_at=at(2025, 1, 5))
    backup_set(failing, at(2025, 3, 7), BackupSet.Status.FAILED)
    invoice, _ = issue_invoice(actor=operator, institution=inst_a, period=MARCH_2025, today=date(2026, 4, 2))
    return invoice


def test_pdf_text_carries_the_number_each_amount_and_the_total(invoice):
    # Lines: 25.00; 8.33; 5.65; 0.00 (failed). Subtotal 38.98; VAT 19 % = 7.4062 -> 7.41; total 46.39.
    assert [str(line.amount) for line in invoice.lines.order_by("position")] == ["25.00", "8.33", "0.00", "5.65"]
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (Decimal("38.98"), Decimal("7.41"), Decimal("46.39"))

    data = render_pdf(invoice)

    assert data.startswith(b"%PDF-")
    text = "\n".join(_pdf_text(data))
    for expected in [
        "Invoice",
        "Number MA-2026-000001",
        "Archive Services Ltd",
        "Alpha Hospital",
        "2025-03-01 to 2025-03-31",
        "25.00",
        "8.33",
        "5.65",
        "0.00",
        "38.98 EUR",
        "VAT 19 %",
        "7.41 EUR",
        "46.39 EUR",
        "Due date",
        "No verified backup in the period",
        "rounded half up to the cent",
        "Page 1 of 1",
    ]:
        assert expected in text, f"{expected!r} missing from the PDF text:\n{text}"


def test_pdf_page_renders_to_a_picture_that_is_not_blank(invoice, tmp_path):
    assert shutil.which("pdftoppm"), "poppler-utils (pdftoppm) is needed: bin/test installs it"
    (tmp_path / "invoice.pdf").write_bytes(render_pdf(invoice))

    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(tmp_path / "invoice.pdf"), str(tmp_path / "page")], check=True
    )

    image = Image.open(next(tmp_path.glob("page*.png"))).convert("L")
    assert image.size[1] > image.size[0]  # A4 portrait
    darkest, lightest = image.getextrema()
    assert lightest > 240 and darkest < 80, "the page is one colour"
    dark_pixels = sum(count for value, count in enumerate(image.histogram()) if value < 128)
    assert dark_pixels > 0.01 * image.size[0] * image.size[1], "almost nothing is printed on the page"


def test_a_long_invoice_paginates_with_the_table_header_on_every_page(operator, inst_b):
    contract = accepted_contract(
        inst_b, mode=BackupMode.PER_EXAMINATION, points="0.1", rate="2", period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    for n in range(120):
        backup_object(contract, f"Study {n:03d}", created_at=at(2025, 2, 20))
    invoice, _ = issue_invoice(actor=operator, institution=inst_b, period=MARCH_2025, today=date(2026, 4, 2))

    pages = _pdf_text(render_pdf(invoice))

    assert len(pages) >= 3
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        assert "Object of backup" in text and "Amount" in text, f"page {number} lacks the table header"
    lines = list(invoice.lines.order_by("position"))
    assert f"{lines[0].object_ref} Per examination" in pages[0] and f"{lines[-1].object_ref} Per examination" in pages[-1]
    assert "24.00 EUR" in pages[-1]  # 120 x 0.20


def test_credit_note_pdf_names_the_invoice_it_cancels(operator, invoice):
    note = issue_credit_note(actor=operator, invoice=invoice, reason="Agreed rate was 2.0", today=date(2026, 4, 3))

    text = "\n".join(_pdf_text(render_pdf(note)))

    assert "Credit note" in text and "Number MA-2026-000002" in text
    assert "cancels invoice MA-2026-000001" in text
    assert "Agreed rate was 2.0" in text
    assert "-46.39 EUR" in text


def test_csv_has_a_row_per_object_subtotals_per_contract_and_the_total(invoice):
    ref = {line.object_label: line.object_ref for line in invoice.lines.all()}

    rows = list(csv.DictReader(io.StringIO(render_csv(invoice))))

    lines = [r for r in rows if r["row"] == "line"]
    assert [(r["object"], r["amount"]) for r in lines] == [
        ("everything the contract covers", "25.00"),
        (ref["DOE^JANE"], "8.33"),
        (ref["POE^EDGAR"], "0.00"),
        (ref["ROE^RICHARD"], "5.65"),
    ]
    assert lines[3]["from"] == "2025-03-11" and lines[3]["days"] == "21" and lines[3]["days_in_month"] == "31"
    assert "No verified backup" in lines[2]["note"]
    subtotals = [(r["contract"], r["amount"]) for r in rows if r["row"] == "subtotal"]
    assert subtotals == [("Nightly full backup", "25.00"), ("Per patient", "13.98")]
    (tax,) = [r for r in rows if r["row"] == "tax"]
    (total,) = [r for r in rows if r["row"] == "total"]
    assert (tax["amount"], total["amount"], total["currency"]) == ("7.41", "46.39", "EUR")
    assert sum(Decimal(r["amount"]) for r in lines) + Decimal(tax["amount"]) == Decimal(total["amount"])
    assert {r["invoice"] for r in rows} == {"MA-2026-000001"}


def test_documents_name_patients_by_number_only_unless_labels_are_asked_for(invoice):
    """An invoice travels to accounting departments, and provider staff do not read patient data."""
    patient_refs = sorted(line.object_ref for line in invoice.lines.filter(object_kind="patient"))
    assert all(ref.startswith("patient ") and ref[8:].isdigit() for ref in patient_refs)

    pdf_text = "\n".join(_pdf_text(render_pdf(invoice)))
    plain_csv = render_csv(invoice)
    labelled = list(csv.DictReader(io.StringIO(render_csv(invoice, with_labels=True))))

    for name in ("DOE^JANE", "ROE^RICHARD", "POE^EDGAR"):
        assert name not in pdf_text and name not in plain_csv
    assert all(ref in pdf_text and ref in plain_csv for ref in patient_refs)
    assert sorted(r["object_label"] for r in labelled if r["row"] == "line" and r["object_kind"] == "patient") == [
        "DOE^JANE",
        "POE^EDGAR",
        "ROE^RICHARD",
    ]
