"""The portal's form for a new polling source; the service checks everything again and names what it refuses."""

from __future__ import annotations

from django import forms

from ..models import Delivery, PollSource
from ..processors import registry
from .services import SourceSettings, parse_assignments


class PollSourceForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="Empty: named after its address.")
    kind = forms.ChoiceField(choices=PollSource.Kind.choices, widget=forms.RadioSelect, initial=PollSource.Kind.DICOM)
    ae_title = forms.CharField(label="AE title", max_length=16, required=False, help_text="DICOM node: the PACS's AE title.")
    host = forms.CharField(max_length=255, required=False, help_text="DICOM node: host name or IP address.")
    port = forms.IntegerField(min_value=1, max_value=65535, required=False, initial=104)
    retrieve = forms.ChoiceField(
        choices=PollSource.Retrieve.choices,
        initial=PollSource.Retrieve.C_GET,
        help_text="C-MOVE sends the studies to this archive's DICOM listener: register the PACS as a sending AE title first.",
    )
    url = forms.URLField(
        label="DICOMweb address", max_length=500, required=False, assume_scheme="https", help_text="e.g. https://pacs.example.org/dicom-web"
    )
    username = forms.CharField(max_length=200, required=False, help_text="DICOMweb: empty for a bearer token.")
    secret = forms.CharField(
        label="Password or token", required=False, widget=forms.PasswordInput(render_value=False), help_text="Kept, never shown again."
    )
    modality = forms.CharField(max_length=16, required=False, help_text="Only studies with this modality, e.g. CT.")
    study_description = forms.CharField(max_length=64, required=False, help_text="Wildcards allowed, e.g. *CHEST*.")
    max_age_days = forms.IntegerField(label="At most this many days old", min_value=1, required=False)
    processor_id = forms.ChoiceField(label="Processing")
    parameters = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, help_text="One NAME=VALUE per line; empty: the defaults."
    )
    every_minutes = forms.IntegerField(label="Poll every (minutes)", min_value=1, initial=60)
    delivery = forms.ChoiceField(choices=Delivery.choices, widget=forms.RadioSelect, initial=Delivery.PULL)
    push_ae = forms.ModelChoiceField(queryset=None, required=False, label="Push to", empty_label="(pull: no push)")

    service_fields = {
        "invalid_ae_title": "ae_title",
        "host_invalid": "host",
        "port_invalid": "port",
        "url_invalid": "url",
        "url_credentials": "url",
        "query_key": "modality",
        "query_value": "study_description",
        "age_invalid": "max_age_days",
        "every_invalid": "every_minutes",
        "push_ae_required": "push_ae",
        "push_ae_invalid": "push_ae",
        "delivery_invalid": "delivery",
        "name_taken": "name",
        "name_invalid": "name",
        "assignment_invalid": "parameters",
        "invalid_parameters": "parameters",
        "unknown_processor": "processor_id",
    }

    def __init__(self, *args, receivers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["push_ae"].queryset = receivers
        self.fields["processor_id"].choices = [(p.id, f"{p.name} ({p.id} {p.version})") for p in registry.available().values()]

    def settings(self) -> SourceSettings:
        data = self.cleaned_data
        query = {}
        if data.get("modality"):
            query["ModalitiesInStudy"] = data["modality"]
        if data.get("study_description"):
            query["StudyDescription"] = data["study_description"]
        return SourceSettings(
            name=data.get("name") or "",
            kind=data["kind"],
            processor_id=data["processor_id"],
            parameters=parse_assignments((data.get("parameters") or "").splitlines()),
            query=query,
            max_age_days=data.get("max_age_days"),
            every_minutes=data["every_minutes"],
            ae_title=(data.get("ae_title") or "").strip(),
            host=data.get("host") or "",
            port=data.get("port"),
            retrieve=data.get("retrieve") or PollSource.Retrieve.C_GET,
            url=data.get("url") or "",
            username=data.get("username") or "",
            secret=data.get("secret") or "",
            delivery=data["delivery"],
            push_ae=data.get("push_ae"),
        )
