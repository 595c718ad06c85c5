"""Read queries of billing, scoped to the caller: institution admins see their institution's invoices, staff all."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce

from backup.models import BackupMode
from subscribers.access import Principal
from subscribers.models import Role

from .models import Invoice, InvoiceLine, InvoiceRun, Tariff


def invoices_visible_to(principal: Principal) -> QuerySet[Invoice]:
    """Provider staff: every invoice and credit note; an institution's admins: that institution's; others: none."""
    queryset = Invoice.objects.select_related("institution").filter(issued_at__isnull=False)
    if principal.is_provider_staff:
        return queryset
    if principal.institution is None or not principal.has_role(Role.ADMIN):
        return queryset.none()
    return queryset.filter(institution=principal.institution)


def lines_of(invoice: Invoice) -> QuerySet[InvoiceLine]:
    return invoice.lines.order_by("position")


@dataclass
class ContractGroup:
    """The lines of one contract on an invoice, with their subtotal."""

    contract_id: int
    label: str
    mode: str
    lines: list[InvoiceLine] = field(default_factory=list)

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def mode_label(self) -> str:
        return BackupMode(self.mode).label


def lines_by_contract(invoice: Invoice) -> list[ContractGroup]:
    groups: dict[int, ContractGroup] = {}
    for line in lines_of(invoice):
        group = groups.get(line.contract_id)
        if group is None:
            group = groups[line.contract_id] = ContractGroup(line.contract_id, line.contract_label, line.mode)
        group.lines.append(line)
    return list(groups.values())


def tariffs_visible_to(principal: Principal) -> QuerySet[Tariff]:
    """The price list is the provider's: staff only."""
    if not principal.is_provider_staff:
        return Tariff.objects.none()
    return Tariff.objects.select_related("created_by").order_by("mode", "-valid_from")


def invoice_runs_visible_to(principal: Principal) -> QuerySet[InvoiceRun]:
    if not principal.is_provider_staff:
        return InvoiceRun.objects.none()
    return InvoiceRun.objects.select_related("institution", "requested_by")


@dataclass
class RevenueRow:
    month: object
    currency: str
    by_mode: dict[str, Decimal]

    @property
    def total(self) -> Decimal:
        return sum(self.by_mode.values(), Decimal("0.00"))

    @property
    def amounts(self) -> list[Decimal]:
        """The amounts in the column order of BackupMode."""
        return [self.by_mode[mode] for mode in BackupMode.values]


def revenue_by_month_and_mode(principal: Principal) -> list[RevenueRow]:
    """Net revenue (invoices less credit notes, before tax) per billing month, currency and backup mode; staff only.

    Rows run newest month first; every row has every mode (zero where nothing was invoiced).
    """
    if not principal.is_provider_staff:
        return []
    rows = (
        InvoiceLine.objects.filter(invoice__issued_at__isnull=False)
        .values("invoice__period_start", "invoice__currency", "mode")
        .annotate(amount=Coalesce(Sum("amount"), Decimal("0.00")))
        .order_by("-invoice__period_start", "invoice__currency", "mode")
    )
    table: dict[tuple, RevenueRow] = {}
    for row in rows:
        key = (row["invoice__period_start"], row["invoice__currency"])
        if key not in table:
            table[key] = RevenueRow(month=key[0], currency=key[1], by_mode={m: Decimal("0.00") for m in BackupMode.values})
        table[key].by_mode[row["mode"]] += row["amount"]
    return list(table.values())
