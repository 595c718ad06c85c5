"""The portal's list of studies the caller may see: its own and those shared with it (marked, with who shared them)."""

from django.core.paginator import Paginator
from django.shortcuts import render

from subscribers.decorators import member_required

from .. import selectors

PAGE_SIZES = (25, 50, 100)


@member_required
def study_list(request):
    """Own and shared studies, newest first; `?shared=1` shows only what others shared with the caller."""
    studies = selectors.studies_visible_to(request.principal).select_related("institution").order_by("-study_date", "-pk")
    shared_only = request.GET.get("shared") == "1"
    if shared_only:
        studies = studies.filter(is_shared=True)
    try:
        per_page = int(request.GET.get("per_page", 25))
    except ValueError:
        per_page = 25
    page = Paginator(studies, per_page if per_page in PAGE_SIZES else 25).get_page(request.GET.get("page"))
    return render(request, "images/study_list.html", {"page": page, "shared_only": shared_only})
