"""Tariffs, invoices and credit notes with their lines and gapless numbers, and the record of invoicing runs.

An issued invoice never changes. The models refuse to save or delete an issued invoice or its lines (also
through QuerySet.update/delete), and on PostgreSQL a trigger refuses UPDATE and DELETE of them as well
(migration 0002). A correction is a credit note that refers to the invoice.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from backup.models import BackupMode, BackupObject, Contract
from subscribers.models import Institution

MONEY = {"max_digits": 14, "decimal_places": 2}


class InvoiceImmutable(ValidationError):
    """Someone tried to change or delete an issued invoice, credit note or one of their lines."""

    def __init__(self, what: str = "an issued invoice"):
        super().__init__(
            f"Refused: {what} never changes. To correct it, issue a credit note that refers to it, then generate the invoice again.",
            code="invoice_immutable",
        )


class Tariff(models.Model):
    """The provider's price of one backup mode from one date: accounting points and the rate of a point per month.

    A contract copies points and rate when it is agreed, so changing the tariff later never alters it.
    """

    mode = models.CharField(max_length=20, choices=BackupMode.choices)
    accounting_points = models.DecimalField(max_digits=10, decimal_places=2, help_text="Accounting points of one object of backup.")
    rate = models.DecimalField(max_digits=12, decimal_places=4, help_text="Price of one point for one month.")
    currency = models.CharField(max_length=3)
    storage_price = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Price of one GB-month of backup storage; empty: storage is shown on invoices but not charged.",
    )
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True, help_text="Last day it applies (inclusive); empty: open-ended.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["mode", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["mode", "valid_from"], name="tariff_unique_mode_start"),
            models.CheckConstraint(condition=Q(accounting_points__gt=0), name="tariff_points_positive"),
            models.CheckConstraint(condition=Q(rate__gt=0), name="tariff_rate_positive"),
            models.CheckConstraint(
                condition=Q(storage_price__isnull=True) | Q(storage_price__gte=0), name="tariff_storage_price_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gte=models.F("valid_from")), name="tariff_range_ordered"
            ),
        ]

    def __str__(self):
        until = f" to {self.valid_until:%Y-%m-%d}" if self.valid_until else ""
        return f"{self.get_mode_display()} from {self.valid_from:%Y-%m-%d}{until}: {self.accounting_points} points at {self.rate} {self.currency}"

    def covers(self, day) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)


class ObjectRemoval(models.Model):
    """When an object of backup left its contract (backup keeps no removal time yet): accounting stops that day."""

    backup_object = models.OneToOneField(BackupObject, on_delete=models.CASCADE, related_name="+")
    removed_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self):
        return f"{self.backup_object} removed {self.removed_at:%Y-%m-%d}"


class InvoiceNumberCounter(models.Model):
    """The last number used per prefix and year; locked (SELECT ... FOR UPDATE) by the transaction that issues."""

    prefix = models.CharField(max_length=12)
    year = models.PositiveIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["prefix", "year"], name="invoice_counter_unique_prefix_year")]

    def __str__(self):
        return f"{self.prefix}-{self.year}: {self.last_number}"


class IssuedQuerySet(models.QuerySet):
    """Bulk update/delete refuse rows that belong to an issued invoice, as save() and delete() do."""

    issued_lookup = "issued_at__isnull"

    def update(self, **kwargs):
        if self.filter(**{self.issued_lookup: False}).exists():
            raise InvoiceImmutable()
        return super().update(**kwargs)

    def delete(self):
        if self.filter(**{self.issued_lookup: False}).exists():
            raise InvoiceImmutable()
        return super().delete()


class LineQuerySet(IssuedQuerySet):
    issued_lookup = "invoice__issued_at__isnull"

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        if Invoice.objects.filter(pk__in={line.invoice_id for line in objs}, issued_at__isnull=False).exists():
            raise InvoiceImmutable("an issued invoice (adding lines)")
        return super().bulk_create(objs, *args, **kwargs)


class Invoice(models.Model):
    """An invoice (or a credit note) of one institution for one billing period, numbered and then never changed.

    `issued_at` is empty only inside the transaction that builds it; that transaction sets it last.
    """

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.INVOICE)
    number = models.CharField(max_length=32, unique=True)
    prefix = models.CharField(max_length=12)
    year = models.PositiveIntegerField()
    sequence = models.PositiveIntegerField()
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="invoices")
    period_start = models.DateField()
    period_end = models.DateField()
    # 1 for the first invoice of a period; a credited invoice is replaced by the next revision.
    revision = models.PositiveSmallIntegerField(default=1)
    credited_invoice = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_note",
        help_text="The invoice this credit note cancels.",
    )
    reason = models.TextField(blank=True, help_text="Why the credit note was issued.")
    currency = models.CharField(max_length=3)
    subtotal = models.DecimalField(**MONEY)
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, help_text="Percent of the subtotal.")
    tax_label = models.CharField(max_length=40, blank=True)
    tax_amount = models.DecimalField(**MONEY)
    total = models.DecimalField(**MONEY)
    issue_date = models.DateField()
    due_date = models.DateField()
    issued_at = models.DateTimeField(null=True, blank=True)
    # No database constraint: an issued invoice outlives the user row and is never rewritten when it goes.
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    issued_by_label = models.CharField(max_length=200)
    provider = models.JSONField(help_text="The provider's details as printed (settings at the time of issue).")
    customer = models.JSONField(help_text="The institution's details as printed.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = IssuedQuerySet.as_manager()

    class Meta:
        ordering = ["-issue_date", "-year", "-sequence"]
        constraints = [
            models.UniqueConstraint(fields=["prefix", "year", "sequence"], name="invoice_unique_sequence"),
            # Generating twice for the same institution and period finds this one instead of making another.
            models.UniqueConstraint(
                fields=["institution", "period_start", "revision"], condition=Q(kind="invoice"), name="invoice_one_per_institution_period"
            ),
            models.CheckConstraint(
                condition=Q(kind="invoice", credited_invoice__isnull=True) | Q(kind="credit_note", credited_invoice__isnull=False),
                name="invoice_credit_note_refers_to_invoice",
            ),
            models.CheckConstraint(condition=Q(period_end__gte=models.F("period_start")), name="invoice_period_ordered"),
        ]
        indexes = [models.Index(fields=["institution", "period_start"], name="invoice_institution_period")]

    def __str__(self):
        return f"{self.get_kind_display()} {self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding and self._stored_as_issued():
            raise InvoiceImmutable(f"{self.get_kind_display().lower()} {self.number}")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self._stored_as_issued():
            raise InvoiceImmutable(f"{self.get_kind_display().lower()} {self.number}")
        return super().delete(*args, **kwargs)

    @property
    def is_credit_note(self) -> bool:
        return self.kind == self.Kind.CREDIT_NOTE

    @property
    def period_label(self) -> str:
        return f"{self.period_start:%Y-%m}"

    def _stored_as_issued(self) -> bool:
        return self.pk is not None and Invoice.objects.filter(pk=self.pk, issued_at__isnull=False).exists()


class InvoiceLine(models.Model):
    """One object of backup on an invoice: the days it was backed up in the period, its points, rate and amount.

    amount = backup_amount + storage_amount, each rounded half-up to the cent (see billing/accounting.py).
    """

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="+")
    contract_label = models.CharField(max_length=300)
    # No database constraint: the line keeps its label when the object goes.
    backup_object = models.ForeignKey(
        BackupObject, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    mode = models.CharField(max_length=20, choices=BackupMode.choices)
    object_kind = models.CharField(max_length=24, choices=BackupObject.Kind.choices)
    # What the document (PDF, CSV) names the object by: "patient 12", "study 345", the acquiring institution's name.
    # Provider staff do not read patient data, and an invoice travels to accounting departments.
    object_ref = models.CharField(max_length=300)
    # The readable label (patient's name and ID, study description): shown to the institution's own admins only.
    object_label = models.CharField(max_length=300)
    service_start = models.DateField(help_text="First day of backup counted in the period.")
    service_end = models.DateField(help_text="Last day of backup counted in the period (inclusive).")
    days = models.PositiveSmallIntegerField()
    days_in_period = models.PositiveSmallIntegerField()
    accounting_points = models.DecimalField(max_digits=10, decimal_places=2)
    rate = models.DecimalField(max_digits=12, decimal_places=4)
    gb_months = models.DecimalField(max_digits=16, decimal_places=4, help_text="Backup storage as received, GB (10^9 bytes) x months.")
    storage_price = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    backup_amount = models.DecimalField(**MONEY)
    storage_amount = models.DecimalField(**MONEY)
    amount = models.DecimalField(**MONEY)
    note = models.CharField(max_length=300, blank=True, help_text="Why the line is charged nothing, when it is.")

    objects = LineQuerySet.as_manager()

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_unique_position")]

    def __str__(self):
        return f"{self.invoice.number} #{self.position}: {self.object_ref}"

    def save(self, *args, **kwargs):
        if self._invoice_issued():
            raise InvoiceImmutable("a line of an issued invoice")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self._invoice_issued():
            raise InvoiceImmutable("a line of an issued invoice")
        return super().delete(*args, **kwargs)

    def _invoice_issued(self) -> bool:
        return Invoice.objects.filter(pk=self.invoice_id, issued_at__isnull=False).exists()


class InvoicePdf(models.Model):
    """The PDF of an issued invoice, rendered once (by a worker: a long invoice takes seconds) and then kept as issued."""

    invoice = models.OneToOneField(Invoice, on_delete=models.CASCADE, related_name="pdf")
    content = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    rendered_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"PDF of {self.invoice_id} ({self.size} bytes)"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise InvoiceImmutable("the PDF of an issued invoice")
        super().save(*args, **kwargs)


class InvoiceRun(models.Model):
    """One round of invoicing a period (every institution with a contract, or one), run by a Celery task."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Monthly schedule"
        PORTAL = "portal", "Provider staff in the portal"

    period_start = models.DateField()
    institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Invoice numbers issued by this run, those found already issued, and institutions refused with the reason.
    issued = models.JSONField(default=list, blank=True)
    existing = models.JSONField(default=list, blank=True)
    refused = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        scope = self.institution.slug if self.institution_id else "all institutions"
        return f"Invoicing {self.period_start:%Y-%m} for {scope} ({self.get_status_display()})"
