"""Portal pages of storage conditions: the institution admin's conditions, legal holds, data-stored state and runs;
provider staff's view of every institution's state.

Rows named in a URL are looked up through the scoped selectors, so another institution's answer 404; services make
every change and audit it, and their ValidationErrors become form errors with nothing changed.
"""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from subscribers.access import get_visible
from subscribers.decorators import admin_required, provider_staff_required
from subscribers.forms import add_service_error

from ..models import StorageCondition, StorageSnapshot
from . import selectors, services
from .forms import LegalHoldForm, ReasonForm, StorageConditionForm, initial_of
from .policy import IMPLICIT_DEFAULT, ConditionSet, study_states

RUNS_SHOWN = 20


def _posted(request):
    return request.POST if request.method == "POST" else None


def institution_admin(view):
    """Admin of the active institution (or provider staff acting for one): view(request, principal, ...)."""

    @admin_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.principal.institution is None:
            return render(request, "subscribers/no_institution.html")
        return view(request, request.principal, *args, **kwargs)

    return wrapped


@institution_admin
def overview(request, principal):
    conditions = list(selectors.conditions_of(principal))
    default = next((c for c in conditions if c.is_default), None)
    runs = list(selectors.snapshots_of(principal)[:RUNS_SHOWN])
    latest = next((r for r in runs if r.status == StorageSnapshot.Status.DONE), None)
    running = next((r for r in runs if r.status == StorageSnapshot.Status.RUNNING), None)
    context = {
        "default": default,
        "implicit_default": IMPLICIT_DEFAULT,
        "overrides": [c for c in conditions if not c.is_default],
        "holds": list(selectors.legal_holds_of(principal).filter(lifted_at__isnull=True)),
        "latest": latest,
        "running": running,
        "runs": runs,
    }
    return render(request, "images/storage_conditions/overview.html", context)


def _condition_page(request, principal, *, condition: StorageCondition | None, modality: str | None):
    """Edit a row (or create the default when modality == "", or a modality row when modality is None)."""
    adding = modality is None
    source = condition or (IMPLICIT_DEFAULT if modality == "" else ConditionSet(selectors.conditions_of(principal)).default)
    form = StorageConditionForm(_posted(request), initial=initial_of(source), with_modality=adding)
    if form.is_bound and form.is_valid():
        row_modality = form.cleaned_data["modality"] if adding else (condition.modality if condition else "")
        try:
            saved = services.save_storage_condition(
                principal=principal, institution=principal.institution, modality=row_modality, adding=adding, **form.values()
            )
        except ValidationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Saved the {saved.modality or 'default'} storage conditions; they apply from the next run.")
            return redirect("storage-conditions")
    context = {"form": form, "condition": condition, "adding": adding, "is_default": modality == "" or (condition and condition.is_default)}
    return render(request, "images/storage_conditions/condition_form.html", context)


@institution_admin
def condition_default(request, principal):
    condition = selectors.conditions_of(principal).filter(modality="").first()
    return _condition_page(request, principal, condition=condition, modality="")


@institution_admin
def condition_add(request, principal):
    return _condition_page(request, principal, condition=None, modality=None)


@institution_admin
def condition_edit(request, principal, pk):
    condition = get_visible(selectors.conditions_of(principal), principal, pk=pk)
    return _condition_page(request, principal, condition=condition, modality=condition.modality)


@require_POST
@institution_admin
def condition_remove(request, principal, pk):
    condition = get_visible(selectors.conditions_of(principal), principal, pk=pk)
    try:
        services.remove_storage_condition(principal=principal, condition=condition)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request, f"Removed the {condition.modality} conditions: {condition.modality} follows the default from the next run."
        )
    return redirect("storage-conditions")


# --- Legal holds ---------------------------------------------------------------------------------------------------------


@institution_admin
def holds(request, principal):
    return render(request, "images/storage_conditions/holds.html", {"holds": selectors.legal_holds_of(principal)[:500]})


@institution_admin
def hold_place(request, principal):
    form = LegalHoldForm(_posted(request))
    if form.is_bound and form.is_valid():
        try:
            hold = services.place_legal_hold(principal=principal, institution=principal.institution, **form.cleaned_data)
        except ValidationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Placed a legal hold on {hold.subject}: nothing of it is deleted until the hold is lifted.")
            return redirect("storage-conditions")
    return render(request, "images/storage_conditions/hold_form.html", {"form": form})


@institution_admin
def hold_lift(request, principal, pk):
    hold = get_visible(selectors.legal_holds_of(principal), principal, pk=pk)
    form = ReasonForm(_posted(request))
    if form.is_bound and form.is_valid():
        try:
            services.lift_legal_hold(principal=principal, hold=hold, reason=form.cleaned_data["reason"])
        except ValidationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Lifted the legal hold on {hold.subject}.")
            return redirect("storage-conditions")
    return render(request, "images/storage_conditions/hold_lift.html", {"form": form, "hold": hold})


# --- Studies past retention ----------------------------------------------------------------------------------------------


@institution_admin
def past_retention(request, principal):
    """Studies whose retention has ended and that are still stored: kept and flagged, or held."""
    today = timezone.localdate()
    conditions = ConditionSet(selectors.conditions_of(principal))
    states = {s.pk: s for s in study_states(principal.institution_id, conditions) if s.past_retention(today)}
    studies = selectors.own_studies(principal).filter(pk__in=list(states)).order_by("study_date", "pk")[:1000]
    rows = [{"study": study, "state": states[study.pk]} for study in studies]
    return render(request, "images/storage_conditions/past_retention.html", {"rows": rows, "total": len(states)})


@institution_admin
def study_delete(request, principal, study_uid):
    study = get_visible(selectors.own_studies(principal), principal, study_instance_uid=study_uid)
    refusal = services.deletion_refusal(study)
    form = ReasonForm(_posted(request))
    if form.is_bound and form.is_valid():
        try:
            services.delete_study(principal=principal, study=study, reason=form.cleaned_data["reason"])
        except ValidationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Deleted study {study.study_instance_uid}: its files and index rows are gone.")
            return redirect("storage-past-retention")
    return render(request, "images/storage_conditions/study_delete.html", {"form": form, "study": study, "refusal": refusal})


# --- Provider staff ---------------------------------------------------------------------------------------------------------


@provider_staff_required
def provider_overview(request):
    principal = request.principal
    institutions = list(selectors.latest_snapshots(principal))
    snapshots = selectors.snapshots_by_id(principal, [i.latest_snapshot_id for i in institutions])
    rows = [{"institution": i, "snapshot": snapshots.get(i.latest_snapshot_id)} for i in institutions]
    totals = {
        name: sum(getattr(r["snapshot"], name) for r in rows if r["snapshot"])
        for name in (
            "instances",
            "bytes_received",
            "bytes_stored",
            "bytes_saved",
            "studies_due_for_deletion",
            "studies_held",
            "studies_lacking_backup_copies",
        )
    }
    return render(request, "images/storage_conditions/provider.html", {"rows": rows, "totals": totals})
