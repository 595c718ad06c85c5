"""Portal pages of polling sources, for the institution's admins (and provider staff): the list with each source's
state, one source with its recent polls and studies, adding one, turning one off or on, and asking for a poll now."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from subscribers.decorators import admin_required
from subscribers.forms import add_service_error

from . import selectors, services
from .forms import PollSourceForm


@admin_required
def source_list(request):
    principal = request.principal
    sources = list(selectors.poll_sources_visible_to(principal).order_by("institution__name", "name"))
    for source in sources:
        source.state = selectors.state_of(source)
    return render(request, "software/polling/source_list.html", {"sources": sources})


@admin_required
def source_detail(request, source_id: int):
    source = selectors.get_poll_source(request.principal, source_id)
    source.state = selectors.state_of(source)
    return render(
        request,
        "software/polling/source_detail.html",
        {"source": source, "runs": selectors.recent_runs(source), "studies": selectors.recent_studies(source)},
    )


@admin_required
def source_add(request):
    principal = request.principal
    institution = principal.institution
    if institution is None:
        return render(request, "subscribers/no_institution.html")
    form = PollSourceForm(request.POST if request.method == "POST" else None, receivers=selectors.receivers_of(institution))
    if form.is_bound and form.is_valid():
        try:
            source = services.add_poll_source(principal=principal, institution=institution, source=form.settings())
        except ValidationError as error:
            add_service_error(form, error, form.service_fields)
        else:
            messages.success(request, f"Added polling source {source.name}; it is polled within a minute.")
            return redirect("poll-source", source.pk)
    return render(request, "software/polling/source_form.html", {"form": form})


@require_POST
@admin_required
def source_set_active(request, source_id: int):
    source = selectors.get_poll_source(request.principal, source_id)
    active = request.POST.get("active") == "1"
    services.set_poll_source_active(principal=request.principal, source=source, is_active=active)
    messages.success(request, f"Polling source {source.name} is {'on: it is polled within a minute' if active else 'off'}.")
    return redirect("poll-source", source.pk)


@require_POST
@admin_required
def source_poll_now(request, source_id: int):
    source = selectors.get_poll_source(request.principal, source_id)
    try:
        services.request_poll_now(principal=request.principal, source=source)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Polling source {source.name} is polled within a minute.")
    return redirect("poll-source", source.pk)
