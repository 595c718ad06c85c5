"""The audit log page: events the caller may see, filtered and paginated."""

from django.core.paginator import Paginator
from django.shortcuts import render

from .. import selectors
from ..decorators import admin_required
from ..forms import AuditFilterForm

EVENTS_PER_PAGE = 50


@admin_required
def audit_log(request):
    principal = request.principal
    form = AuditFilterForm(request.GET or None, provider_staff=principal.is_provider_staff)
    events = selectors.audit_events_visible_to(principal)
    if form.is_bound:
        form.is_valid()  # invalid fields are shown with their error and left out of the filter
        events = selectors.filter_audit_events(events, **form.filters())
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "subscribers/audit_log.html", {"form": form, "page_obj": page, "events": page.object_list})
