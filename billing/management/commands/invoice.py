"""Operator command: issue (or find) an institution's invoice for a month; print its number and total; write PDF and CSV."""

from pathlib import Path

from django.core.management.base import CommandError

from billing import documents, services
from billing.periods import Period
from subscribers.access import OPERATOR
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors


class Command(OperatorCommand):
    help = """Issue an institution's backup invoice for a month that is over, or find the one already issued.

Prints the invoice number, whether it was issued now or already existed, and the total.
With --out, writes NUMBER.pdf and NUMBER.csv into that folder (created if missing).
Generating again for the same institution and month finds the same invoice: numbers
are never used twice. Refused, with nothing issued, when the institution had no
accepted contract in force in the month, the month has not ended, or the contract's
currency differs from its tariff's."""
    examples = """
        manage.py invoice --institution st-marys --period 2026-03
        manage.py invoice --institution st-marys --period 2026-03 --out /srv/invoices/2026-03
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True, help="slug of the institution to invoice")
        parser.add_argument("--period", metavar="YYYY-MM", required=True, help="the billing month, e.g. 2026-03")
        parser.add_argument("--out", metavar="DIR", type=Path, help="folder to write the invoice's PDF and CSV into")

    def handle(self, *args, **options):
        with refusals_as_command_errors("bad --period"):
            period = Period.parse(options["period"])
        institution = institution_by_slug(options["institution"])
        out = options["out"]
        if out is not None and out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} exists and is not a folder")
        with refusals_as_command_errors(f"cannot invoice {institution.slug} for {period}"):
            invoice, created = services.issue_invoice(actor=OPERATOR, institution=institution, period=period)
        state = "issued" if created else "already issued"
        self.stdout.write(f"{invoice.number} {state} for {institution.name}, {period}: total {invoice.total} {invoice.currency}")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            pdf = out / documents.filename(invoice, "pdf")
            pdf.write_bytes(documents.ensure_pdf(invoice))
            csv = out / documents.filename(invoice, "csv")
            csv.write_text(documents.render_csv(invoice), encoding="utf-8")
            self.stdout.write(f"wrote {pdf} and {csv}")
