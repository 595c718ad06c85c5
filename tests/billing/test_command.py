"""manage.py invoice: issues or finds the invoice, prints number and total, writes PDF and CSV where --out says."""

import csv
import io
from datetime import date

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pypdf import PdfReader

from backup.models import BackupMode
from billing.models import Invoice
from tests.billing.builders import accepted_contract, at, backup_object


@pytest.fixture
def contract_a(inst_a):
    contract = accepted_contract(
        inst_a, mode=BackupMode.PER_PATIENT, points="2", rate="1.5", period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    backup_object(contract, "DOE^JANE", created_at=at(2025, 2, 11))
    backup_object(contract, "ROE^RICHARD", created_at=at(2025, 3, 16))  # 16 of 31 days: 3 x 16/31 = 1.548... -> 1.55
    return contract


def _run(*args) -> str:
    out = io.StringIO()
    call_command("invoice", *args, stdout=out)
    return out.getvalue()


def test_command_issues_then_finds_the_invoice_and_writes_pdf_and_csv(contract_a, tmp_path):
    first = _run("--institution", "alpha", "--period", "2025-03", "--out", str(tmp_path / "out"))
    second = _run("--institution", "alpha", "--period", "2025-03")

    invoice = Invoice.objects.get()
    assert f"{invoice.number} issued for Alpha Hospital, 2025-03: total 4.55 EUR" in first
    assert f"{invoice.number} already issued for Alpha Hospital, 2025-03: total 4.55 EUR" in second
    pdf = tmp_path / "out" / f"{invoice.number}.pdf"
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert invoice.number in text and "3.00" in text and "1.55" in text and "4.55 EUR" in text
    rows = list(csv.DictReader((tmp_path / "out" / f"{invoice.number}.csv").open(encoding="utf-8")))
    assert [r["amount"] for r in rows if r["row"] == "line"] == ["3.00", "1.55"]
    assert [r["amount"] for r in rows if r["row"] == "total"] == ["4.55"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--institution", "alpha", "--period", "2025-3"], "written YYYY-MM"),
        (["--institution", "alpha", "--period", "2025-13"], "written YYYY-MM"),
        (["--institution", "nowhere", "--period", "2025-03"], "no institution with slug 'nowhere'"),
        (["--institution", "alpha", "--period", "2025-01"], "no accepted backup contract in force in 2025-01"),
        (["--institution", "alpha", "--period", "2999-01"], "has not ended yet"),
    ],
)
def test_command_refuses_clearly_and_issues_nothing(contract_a, args, message):
    with pytest.raises(CommandError, match=message):
        _run(*args)
    assert not Invoice.objects.exists()


def test_command_help_explains_and_gives_examples(capsys):
    with pytest.raises(SystemExit):
        call_command("invoice", "--help")
    text = capsys.readouterr().out
    assert "--out DIR" in text and "examples:" in text and "manage.py invoice --institution st-marys --period 2026-03" in text
