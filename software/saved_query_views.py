"""Portal page of saved queries: the institution's saved queries, saving one, and running a processing type on every own
study one matches (software/services/saved_queries.py)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from subscribers import audit
from subscribers.decorators import role_required
from subscribers.forms import add_service_error
from subscribers.models import Role

from . import selectors
from .errors import InvalidParameters, LicenceRefused
from .models import Delivery, ProcessingJob
from .services import jobs, saved_queries

software_required = role_required(Role.SOFTWARE)


class SavedQueryForm(forms.Form):
    """The worklist's filters, stored as DICOM match keys (QIDO-RS study-level matching)."""

    name = forms.CharField(max_length=100)
    patient_name = forms.CharField(required=False, max_length=64, label="Patient name", help_text="DICOM wildcards * and ?, any case.")
    patient_id = forms.CharField(required=False, max_length=64, label="Patient ID")
    modality = forms.CharField(required=False, max_length=64, help_text="A modality code, e.g. CT.")
    study_description = forms.CharField(required=False, max_length=64, help_text="Exactly, or with * and ?.")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Study date from")
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Study date to")
    max_age_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=saved_queries.MAX_AGE_DAYS,
        label="At most this many days old",
        help_text="Counted back from the day it is run.",
    )

    service_fields = {"match_value": None, "empty_match": None}

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end of the date range is before its start.")
        return data

    def match(self) -> dict[str, str]:
        data = self.cleaned_data
        start, end = data.get("date_from"), data.get("date_to")
        study_date = f"{start:%Y%m%d}-{end:%Y%m%d}" if start and end else f"{start:%Y%m%d}-" if start else f"-{end:%Y%m%d}" if end else ""
        return {
            "PatientName": data.get("patient_name", ""),
            "PatientID": data.get("patient_id", ""),
            "ModalitiesInStudy": data.get("modality", ""),
            "StudyDescription": data.get("study_description", ""),
            "StudyDate": study_date,
        }


class RunForm(forms.Form):
    type = forms.ChoiceField(label="Processing type")
    parameters = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="One NAME=VALUE per line; empty: the type's defaults."
    )
    push_ae = forms.ModelChoiceField(queryset=None, required=False, label="Push to", empty_label="(pull: no push)")

    def __init__(self, *args, types, aes, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["type"].choices = [(row["id"], row["processor"].name) for row in types if row["processor"] is not None]
        self.fields["push_ae"].queryset = aes

    def clean_parameters(self) -> dict[str, str]:
        pairs = {}
        for line in self.cleaned_data["parameters"].splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise ValidationError(f"Give each parameter as NAME=VALUE, not {line.strip()!r}.")
            pairs[name.strip()] = value.strip()
        return pairs


def _page(request, *, save_form=None, run_form=None, run_query=None, status=200):
    principal = request.principal
    types = selectors.processing_types_for(principal)
    aes = selectors.receiving_aes(principal)
    found = list(saved_queries.saved_queries_visible_to(principal).order_by("name"))
    context = {
        "saved_queries": found,
        "save_form": save_form or SavedQueryForm(),
        "run_form": run_form,  # bound, with its errors, for run_query
        "push_aes": list(aes),  # read once, offered in every row's run form
        "run_query": run_query,
        "types": types,
    }
    return render(request, "software/saved_queries.html", context, status=status)


@software_required
def saved_query_list(request):
    """GET: the saved queries with a form to run each; POST: save a new one."""
    if request.method != "POST":
        return _page(request)
    form = SavedQueryForm(request.POST)
    if form.is_valid():
        try:
            saved = saved_queries.save_query(
                principal=request.principal,
                name=form.cleaned_data["name"],
                match=form.match(),
                max_age_days=form.cleaned_data.get("max_age_days"),
                address=audit.client_address(request),
            )
        except ValidationError as error:
            add_service_error(form, error, form.service_fields)
        else:
            messages.success(request, f"Saved the query {saved.name}.")
            return redirect("processing-saved-queries")
    return _page(request, save_form=form, status=400)


@software_required
@require_POST
def saved_query_run(request, saved_query_id: int):
    principal = request.principal
    saved = saved_queries.get_saved_query(principal, saved_query_id)
    form = RunForm(request.POST, types=selectors.processing_types_for(principal), aes=selectors.receiving_aes(principal))
    status = 400
    if form.is_valid():
        push_ae = form.cleaned_data.get("push_ae")
        try:
            processor = jobs.processor_for(form.cleaned_data["type"])
            run = saved_queries.run_saved_query(
                principal=principal,
                saved_query=saved,
                processor_id=processor.id,
                parameters=jobs.coerce_parameters(processor, form.cleaned_data["parameters"]),
                delivery=Delivery.PUSH if push_ae else Delivery.PULL,
                push_ae=push_ae,
                origin=ProcessingJob.Origin.PORTAL,
                address=audit.client_address(request),
            )
        except LicenceRefused as refusal:
            form.add_error(None, refusal.reason)
            status = 403
        except InvalidParameters as error:
            form.add_error("parameters", error.messages[0])
        except ValidationError as error:
            form.add_error(None, " ".join(error.messages))
        else:
            skipped = (
                f"; {len(run.skipped)} matched stud{'y has' if len(run.skipped) == 1 else 'ies have'} nothing for it" if run.skipped else ""
            )
            messages.success(
                request,
                f"{len(run.jobs)} job{'s' if len(run.jobs) != 1 else ''} of {run.jobs[0].processor_name} queued for {saved.name}{skipped}.",
            )
            return redirect("processing-jobs")
    return _page(request, run_form=form, run_query=saved, status=status)
