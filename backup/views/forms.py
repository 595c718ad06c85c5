"""Portal forms of the contract pages: they parse input only; the services validate the terms and decide."""

from __future__ import annotations

from django import forms

from ..models import BackupMode, Coverage
from ..services.terms import TERM_FIELDS, backup_targets

DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
TIME = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")


class TermsForm(forms.Form):
    """The terms of a contract (a proposal or a counter-proposal), with a message to the other side."""

    mode = forms.ChoiceField(label="Backup mode", choices=BackupMode.choices)
    coverage = forms.ChoiceField(label="Objects of backup", choices=Coverage.choices)
    coverage_items = forms.CharField(
        label="Chosen items",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: acquiring institution names as in the images' InstitutionName, or patient or study numbers. "
        "Leave empty when everything is covered.",
    )
    schedule_time = forms.TimeField(
        label="Schedule time",
        required=False,
        widget=TIME,
        help_text="Time of day of the run, for 'All at a set time' and 'Per institution'.",
    )
    quiet_minutes = forms.IntegerField(
        label="Quiet time (minutes)", initial=60, help_text="Per examination: a study is complete when no image arrived for this long."
    )
    period_start = forms.DateField(label="Period start", widget=DATE)
    period_end = forms.DateField(label="Period end", required=False, widget=DATE, help_text="Last day of the contract; empty: open-ended.")
    accounting_points = forms.DecimalField(label="Accounting points", help_text="Points of the mode per month.")
    rate = forms.DecimalField(label="Rate per point and month")
    currency = forms.CharField(label="Currency", max_length=3, initial="EUR")
    target = forms.ChoiceField(label="Backup target", help_text="The storage the backup sets are written to.")
    message = forms.CharField(
        label="Message",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the other side should know about these terms.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = [(alias, alias) for alias in backup_targets()]

    def terms(self) -> dict:
        return {name: self.cleaned_data[name] for name in TERM_FIELDS}

    @staticmethod
    def initial_from(terms: dict) -> dict:
        initial = dict(terms)
        initial["coverage_items"] = "\n".join(str(item) for item in terms.get("coverage_items") or [])
        return initial


class ProposeForm(TermsForm):
    institution = forms.ModelChoiceField(queryset=None, label="Institution", empty_label="Choose an institution")
    title = forms.CharField(label="Title", max_length=200, required=False, help_text="Optional; the mode and institution otherwise.")

    field_order = ["institution", "title", *TermsForm.base_fields]

    def __init__(self, *args, institutions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions


class CounterForm(TermsForm):
    round = forms.IntegerField(widget=forms.HiddenInput)


class AnswerForm(forms.Form):
    """Accept, reject or terminate: an optional message and the round the answer is to."""

    message = forms.CharField(label="Message", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    round = forms.IntegerField(widget=forms.HiddenInput, required=False)
