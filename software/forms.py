"""Forms of the software pages: catalogue entries, artifacts, licences, and the Process form built from a type's schema."""

from __future__ import annotations

from django import forms

from images.models import Series, Study
from subscribers.models import ApplicationEntity

from .models import Delivery, Software
from .processors.base import Processor


class SoftwareForm(forms.Form):
    name = forms.CharField(max_length=200)
    vendor = forms.CharField(max_length=200)
    intended_use = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    kind = forms.ChoiceField(choices=Software.Kind.choices)
    processor_id = forms.CharField(max_length=64, required=False, help_text="Server-run software: the processing type id (e.g. mip).")


class VersionForm(forms.Form):
    version = forms.CharField(max_length=64)
    platform = forms.CharField(max_length=64, initial="any", help_text="e.g. windows-x86_64, linux-x86_64, macos-arm64, any")
    release_notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    artifact = forms.FileField()


class GrantForm(forms.Form):
    institution = forms.ModelChoiceField(queryset=None)
    valid_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="Empty: today.")
    valid_until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="Empty: no end.")
    usage_quota = forms.IntegerField(required=False, min_value=1, help_text="Uses (jobs, downloads); empty: no limit.")
    seats = forms.IntegerField(required=False, min_value=1, help_text="Distinct users; empty: any number.")

    def __init__(self, *args, institutions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions


def _kinds(spec: dict) -> list[str]:
    kinds = spec.get("type", [])
    return [kinds] if isinstance(kinds, str) else list(kinds)


class ProcessForm(forms.Form):
    """What to run: the type's parameters (fields made from its JSON schema), the images, and the delivery."""

    WHAT = (("study", "The whole study"), ("series", "The series ticked below"), ("instances", "The SOP instances listed below"))

    what = forms.ChoiceField(choices=WHAT, initial="study", widget=forms.RadioSelect, label="Images")
    series = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    instances = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="SOP Instance UIDs, one per line.")
    delivery = forms.ChoiceField(choices=Delivery.choices, initial=Delivery.PULL, widget=forms.RadioSelect)
    push_ae = forms.ModelChoiceField(queryset=None, required=False, label="Receiving AE title", help_text="For push delivery.")

    def __init__(self, processor: Processor, *args, series: list[Series], aes, **kwargs):
        super().__init__(*args, **kwargs)
        self.processor = processor
        self.fields["series"].choices = [(s.series_instance_uid, f"{s} ({s.number_of_instances} images)") for s in series]
        self.fields["push_ae"].queryset = aes if aes is not None else ApplicationEntity.objects.none()
        self.parameter_names = []
        for name, spec in processor.parameters_schema.get("properties", {}).items():
            field = self._field_for(spec)
            field.label = spec.get("title", name.replace("_", " ").capitalize())
            field.help_text = spec.get("description", "")
            if "default" in spec and spec["default"] is not None:
                field.initial = spec["default"]
            self.fields[f"param_{name}"] = field
            self.parameter_names.append(name)

    @staticmethod
    def _field_for(spec: dict) -> forms.Field:
        kinds = _kinds(spec)
        if "enum" in spec:
            return forms.ChoiceField(choices=[(v, v) for v in spec["enum"]])
        if "array" in kinds and "enum" in spec.get("items", {}):
            return forms.MultipleChoiceField(
                choices=[(v, v) for v in spec["items"]["enum"]], widget=forms.CheckboxSelectMultiple, required=False
            )
        if "boolean" in kinds:
            return forms.BooleanField(required=False)
        if "integer" in kinds:
            return forms.IntegerField(required=False)
        if "number" in kinds:
            return forms.FloatField(required=False)
        return forms.CharField(required=False)

    @property
    def parameter_fields(self):
        return [self[f"param_{name}"] for name in self.parameter_names]

    @property
    def other_fields(self):
        return [self[name] for name in ("what", "series", "instances", "delivery", "push_ae")]

    def clean(self):
        data = super().clean()
        if data.get("what") == "series" and not data.get("series"):
            self.add_error("series", "Tick at least one series.")
        if data.get("what") == "instances" and not (data.get("instances") or "").split():
            self.add_error("instances", "List at least one SOP Instance UID.")
        if data.get("delivery") == Delivery.PUSH and not data.get("push_ae"):
            self.add_error("push_ae", "Push delivery needs a receiving AE title.")
        return data

    def parameters(self) -> dict:
        properties = self.processor.parameters_schema.get("properties", {})
        result = {}
        for name in self.parameter_names:
            value = self.cleaned_data.get(f"param_{name}")
            kinds = _kinds(properties[name])
            if value in (None, "") and "boolean" not in kinds:
                if "null" in kinds:
                    result[name] = None
                continue  # the schema's default applies
            if "array" in kinds and isinstance(value, list) and not value:
                result[name] = []
                continue
            result[name] = value
        return result

    def uids(self, study: Study) -> list[str]:
        what = self.cleaned_data["what"]
        if what == "series":
            return list(self.cleaned_data["series"])
        if what == "instances":
            return self.cleaned_data["instances"].split()
        return [study.study_instance_uid]
