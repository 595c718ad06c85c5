"""Invoices: one per institution and month, gapless numbers, never changed once issued, corrected by credit note."""

import threading
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError

from backup.models import BackupMode
from billing.models import Invoice, InvoiceImmutable, InvoiceLine, InvoiceNumberCounter
from billing.periods import Period
from billing.services import issue_credit_note, issue_invoice
from subscribers.models import AuditEvent
from tests.billing.builders import accepted_contract, at, backup_object
from tests.factories import InstitutionFactory

MARCH_2025 = Period(date(2025, 3, 1))
ISSUED_ON = date(2026, 4, 2)


def _with_contract(institution, points="10", rate="2.5"):
    contract = accepted_contract(
        institution, mode=BackupMode.ALL_AT_TIME, points=points, rate=rate, period_start=date(2025, 2, 1), accepted_at=at(2025, 2, 10)
    )
    backup_object(contract, "Everything", created_at=at(2025, 2, 11))
    return contract


def _issue(operator, institution, **kwargs):
    kwargs.setdefault("today", ISSUED_ON)
    kwargs.setdefault("period", MARCH_2025)
    return issue_invoice(actor=operator, institution=institution, **kwargs)


def test_generating_twice_yields_the_same_single_invoice(operator, inst_a):
    _with_contract(inst_a)

    first, created_first = _issue(operator, inst_a)
    second, created_second = _issue(operator, inst_a)

    assert (created_first, created_second) == (True, False)
    assert first.pk == second.pk and first.number == second.number == "MA-2026-000001"
    assert Invoice.objects.count() == 1 and InvoiceLine.objects.count() == 1
    assert InvoiceNumberCounter.objects.get().last_number == 1
    assert AuditEvent.objects.filter(action="invoice.issue").count() == 1


def test_the_database_refuses_a_second_invoice_for_the_same_institution_and_month(operator, inst_a):
    from django.db import IntegrityError

    _with_contract(inst_a)
    invoice, _ = _issue(operator, inst_a)
    clone = Invoice(
        **{f.attname: getattr(invoice, f.attname) for f in Invoice._meta.concrete_fields if f.name not in ("id", "number", "sequence")},
        number="MA-2026-999999",
        sequence=999999,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        clone.save()


def test_numbers_are_sequential_without_gaps_even_when_one_institution_is_refused(operator, inst_a, inst_b):
    inst_c = InstitutionFactory(name="Gamma Centre", slug="gamma")
    _with_contract(inst_a)
    _with_contract(inst_c)  # inst_b has no contract: refused in between, and uses no number

    numbers = [_issue(operator, inst_a)[0].number]
    with pytest.raises(Exception, match="no accepted backup contract"):
        _issue(operator, inst_b)
    numbers.append(_issue(operator, inst_c)[0].number)
    numbers.append(_issue(operator, inst_a, period=Period(date(2025, 4, 1)))[0].number)

    assert numbers == ["MA-2026-000001", "MA-2026-000002", "MA-2026-000003"]
    assert list(Invoice.objects.order_by("sequence").values_list("sequence", flat=True)) == [1, 2, 3]


def test_numbers_restart_each_year_and_carry_the_prefix_from_settings(operator, inst_a, settings):
    settings.BILLING_INVOICE_PREFIX = "ZZ"
    _with_contract(inst_a)

    first = _issue(operator, inst_a, today=date(2025, 12, 30))[0]
    second = _issue(operator, inst_a, period=Period(date(2025, 12, 1)), today=date(2026, 1, 3))[0]

    assert (first.number, second.number) == ("ZZ-2025-000001", "ZZ-2026-000001")


def test_an_issued_invoice_cannot_be_edited_or_deleted(operator, inst_a):
    _with_contract(inst_a)
    invoice, _ = _issue(operator, inst_a)
    line = invoice.lines.get()

    invoice.total = Decimal("1.00")
    with pytest.raises(InvoiceImmutable, match="never changes"):
        invoice.save()
    with pytest.raises(InvoiceImmutable):
        invoice.delete()
    with pytest.raises(InvoiceImmutable):
        Invoice.objects.filter(pk=invoice.pk).update(total=Decimal("1.00"))
    with pytest.raises(InvoiceImmutable):
        Invoice.objects.filter(pk=invoice.pk).delete()
    line.amount = Decimal("0.01")
    with pytest.raises(InvoiceImmutable):
        line.save()
    with pytest.raises(InvoiceImmutable):
        line.delete()
    with pytest.raises(InvoiceImmutable):
        InvoiceLine.objects.filter(pk=line.pk).update(amount=Decimal("0.01"))
    line.pk, line.position = None, 2
    with pytest.raises(InvoiceImmutable):
        line.save()
    with pytest.raises(InvoiceImmutable):
        InvoiceLine.objects.bulk_create([line])

    fresh = Invoice.objects.get(pk=invoice.pk)
    assert fresh.total == Decimal("25.00")
    assert list(fresh.lines.values_list("amount", flat=True)) == [Decimal("25.00")]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL only")
def test_postgresql_itself_refuses_changes_to_an_issued_invoice(operator, inst_a):
    _with_contract(inst_a)
    invoice, _ = _issue(operator, inst_a)
    statements = [
        ("UPDATE billing_invoice SET total = 1 WHERE id = %s", [invoice.pk]),
        ("DELETE FROM billing_invoice WHERE id = %s", [invoice.pk]),
        ("UPDATE billing_invoiceline SET amount = 1 WHERE invoice_id = %s", [invoice.pk]),
        ("DELETE FROM billing_invoiceline WHERE invoice_id = %s", [invoice.pk]),
    ]
    for sql, params in statements:
        with pytest.raises(DatabaseError, match="never change"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    assert Invoice.objects.get(pk=invoice.pk).total == Decimal("25.00")


def test_credit_note_cancels_the_invoice_and_the_month_can_be_invoiced_again(operator, inst_a):
    contract = _with_contract(inst_a)
    invoice, _ = _issue(operator, inst_a)

    note = issue_credit_note(actor=operator, invoice=invoice, reason="Wrong rate agreed", today=ISSUED_ON)

    assert note.kind == Invoice.Kind.CREDIT_NOTE and note.credited_invoice == invoice
    assert note.number == "MA-2026-000002"
    assert (note.subtotal, note.total) == (Decimal("-25.00"), Decimal("-25.00"))
    assert list(note.lines.values_list("amount", "object_label")) == [(Decimal("-25.00"), "Everything")]
    assert Invoice.objects.get(pk=invoice.pk).total == Decimal("25.00")  # the invoice itself is untouched

    # The corrected terms (a contract amended by the backup negotiation) go on the next revision.
    type(contract).objects.filter(pk=contract.pk).update(rate=Decimal("2.0000"))
    corrected, created = _issue(operator, inst_a)
    again, created_again = _issue(operator, inst_a)

    assert created and not created_again and again.pk == corrected.pk
    assert (corrected.number, corrected.revision, corrected.total) == ("MA-2026-000003", 2, Decimal("20.00"))


def test_an_invoice_is_credited_once_and_a_credit_note_not_at_all(operator, inst_a):
    _with_contract(inst_a)
    invoice, _ = _issue(operator, inst_a)
    note = issue_credit_note(actor=operator, invoice=invoice, reason="Duplicate", today=ISSUED_ON)

    with pytest.raises(Exception, match="already credited by MA-2026-000002"):
        issue_credit_note(actor=operator, invoice=invoice, reason="Again", today=ISSUED_ON)
    with pytest.raises(Exception, match="is itself a credit note"):
        issue_credit_note(actor=operator, invoice=note, reason="Credit the credit", today=ISSUED_ON)
    with pytest.raises(Exception, match="Say why"):
        issue_credit_note(actor=operator, invoice=invoice, reason="  ", today=ISSUED_ON)
    assert Invoice.objects.count() == 2
    assert InvoiceNumberCounter.objects.get().last_number == 2


def test_invoice_keeps_the_provider_details_it_was_issued_with(operator, inst_a, settings):
    settings.BILLING_PROVIDER_NAME = "Archive Services Ltd"
    settings.BILLING_PROVIDER_ADDRESS = "9 Provider Way\nCapital City"
    _with_contract(inst_a)
    invoice, _ = _issue(operator, inst_a)

    settings.BILLING_PROVIDER_NAME = "Renamed Provider plc"

    invoice = Invoice.objects.get(pk=invoice.pk)
    assert invoice.provider["name"] == "Archive Services Ltd"
    assert invoice.provider["address"] == "9 Provider Way\nCapital City"
    assert invoice.customer["name"] == "Alpha Hospital"


def _issue_in_thread(operator, institution, results, errors, barrier):
    try:
        barrier.wait(timeout=10)
        invoice, created = issue_invoice(actor=operator, institution=institution, period=MARCH_2025, today=ISSUED_ON)
        results.append((institution.slug, invoice.number, created))
    except Exception as error:  # reported by the test
        errors.append(repr(error))
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_concurrent_generations_make_no_gaps_and_no_duplicates(operator):
    institutions = [InstitutionFactory(name=f"Concurrent {i}", slug=f"concurrent-{i}") for i in range(3)]
    for institution in institutions:
        _with_contract(institution)
    results, errors = [], []
    # Two generations per institution, all released at once: each pair races for the same invoice.
    targets = institutions * 2
    barrier = threading.Barrier(len(targets))
    threads = [threading.Thread(target=_issue_in_thread, args=(operator, inst, results, errors, barrier)) for inst in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert len(results) == 6
    assert sum(created for _, _, created in results) == 3
    by_institution = {}
    for slug, number, _ in results:
        by_institution.setdefault(slug, set()).add(number)
    assert all(len(numbers) == 1 for numbers in by_institution.values()), by_institution
    assert sorted(Invoice.objects.values_list("number", flat=True)) == ["MA-2026-000001", "MA-2026-000002", "MA-2026-000003"]
    assert InvoiceNumberCounter.objects.get().last_number == 3
