"""Portal forms of billing: they parse input only; the services decide, refuse and change state."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from backup.models import BackupMode

from .periods import Period, last_month


class TariffForm(forms.Form):
    mode = forms.ChoiceField(choices=BackupMode.choices, label="Backup mode")
    accounting_points = forms.DecimalField(max_digits=10, decimal_places=2, help_text="Points of one object of backup.")
    rate = forms.DecimalField(max_digits=12, decimal_places=4, help_text="Price of one point for one month.")
    currency = forms.CharField(max_length=3, initial=settings.BILLING_CURRENCY)
    storage_price = forms.DecimalField(
        max_digits=12,
        decimal_places=4,
        required=False,
        label="Storage price per GB-month",
        help_text="Leave empty to show storage on invoices without charging it.",
    )
    valid_from = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="Applies from")
    valid_until = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}), required=False, label="Applies until", help_text="Empty: open-ended."
    )

    # Service error codes -> the field they are about.
    service_fields = {
        "bad_points": "accounting_points",
        "bad_rate": "rate",
        "bad_currency": "currency",
        "bad_storage_price": "storage_price",
        "bad_dates": "valid_until",
        "tariff_overlap": "valid_from",
    }


class EndTariffForm(forms.Form):
    last_day = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="Last day it applies")


class PeriodField(forms.Field):
    """A billing month typed as YYYY-MM, cleaned to a Period."""

    widget = forms.TextInput(attrs={"placeholder": "YYYY-MM", "pattern": r"\d{4}-\d{2}", "size": 8})

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "A month, written YYYY-MM.")
        super().__init__(**kwargs)

    def to_python(self, value):
        value = (value or "").strip()
        return Period.parse(value) if value else None

    def prepare_value(self, value):
        return value.label if isinstance(value, Period) else value


class GenerateInvoicesForm(forms.Form):
    period = PeriodField(label="Billing month")
    institution = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Every institution with a contract", to_field_name="slug"
    )

    def __init__(self, *args, institutions, **kwargs):
        kwargs.setdefault("initial", {"period": last_month().label})
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions


class InvoiceFilterForm(forms.Form):
    period = PeriodField(required=False, label="Billing month")
    institution = forms.ModelChoiceField(queryset=None, required=False, empty_label="All institutions", to_field_name="slug")

    def __init__(self, *args, institutions=None, **kwargs):
        super().__init__(*args, **kwargs)
        if institutions is None:
            del self.fields["institution"]
        else:
            self.fields["institution"].queryset = institutions


class CreditNoteForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000, help_text="Printed on the credit note.")

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Say why the invoice is credited.")
        return reason
