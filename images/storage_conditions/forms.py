"""Portal forms of storage conditions: they parse input; the services decide and change state."""

from __future__ import annotations

from django import forms

from ..models import StorageCondition


class StorageConditionForm(forms.Form):
    modality = forms.CharField(
        max_length=16, help_text="The DICOM modality these conditions apply to instead of the default, e.g. CT, MR, US."
    )
    retention_years = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=StorageCondition.MAX_RETENTION_YEARS,
        label="Retention period (years)",
        help_text="Empty: kept without limit.",
    )
    retention_from = forms.ChoiceField(
        choices=StorageCondition.RetentionFrom.choices, widget=forms.RadioSelect, label="Counted from", initial="study_date"
    )
    at_retention_end = forms.ChoiceField(
        choices=StorageCondition.AtRetentionEnd.choices,
        widget=forms.RadioSelect,
        label="When the retention period ends",
        initial="keep_flag",
    )
    compression = forms.ChoiceField(
        choices=StorageCondition.Compression.choices,
        required=False,
        label="Compression at rest",
        help_text="Lossless only, and only where the re-encoded file decodes to identical pixels; compressed or lossy files are left alone.",
    )
    immutable = forms.BooleanField(
        required=False,
        label="Immutable",
        help_text="Nothing can be deleted before its retention period ends, not even by an admin; once set, it can only be made stricter.",
    )
    required_backup_copies = forms.IntegerField(
        min_value=0, max_value=StorageCondition.MAX_BACKUP_COPIES, initial=0, label="Verified backup copies required"
    )

    def __init__(self, *args, with_modality: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not with_modality:
            del self.fields["modality"]

    def values(self) -> dict:
        data = dict(self.cleaned_data)
        data.pop("modality", None)
        data["compression"] = data.get("compression") or ""
        return data


def initial_of(condition: StorageCondition) -> dict:
    return {name: getattr(condition, name) for name in StorageConditionForm.base_fields if hasattr(condition, name)}


class LegalHoldForm(forms.Form):
    patient_id = forms.CharField(
        max_length=64, required=False, label="Patient ID", help_text="Holds every study of the patient, now and later."
    )
    study_instance_uid = forms.CharField(max_length=64, required=False, label="or Study Instance UID", help_text="Holds one study.")
    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 3}), help_text="The case or matter, and who asked for the hold."
    )

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("patient_id", "").strip()) == bool(cleaned.get("study_instance_uid", "").strip()):
            raise forms.ValidationError("Give either a patient ID or a study instance UID.")
        return cleaned


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))
