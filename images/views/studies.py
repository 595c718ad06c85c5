"""The worklist: the home page of receiving users — the studies the caller may see, filtered, sorted and paged.

Everything that decides what is shown is in the URL (filters, sort, page size, the page's cursor), so a bookmark, a
shared link or the back button gives the same list. The query itself is images/worklist.py.
"""

from urllib.parse import urlencode

from django import forms
from django.shortcuts import render
from django.urls import reverse

from subscribers import audit
from subscribers.decorators import member_required
from subscribers.models import Role

from .. import selectors, worklist
from ..viewer import study_viewer_url

# Offered in the modality field's suggestions; any other DICOM modality code is accepted too.
COMMON_MODALITIES = ("CT", "MR", "CR", "DX", "MG", "US", "PT", "NM", "XA", "RF", "OT", "SR", "SEG")
DATE_FORMATS = ["%Y-%m-%d", "%Y%m%d"]  # the date picker's ISO form, and DICOM's DA typed by hand


class WorklistForm(forms.Form):
    patient_name = forms.CharField(
        required=False, max_length=worklist.MAX_FILTER_LENGTH, label="Patient name", help_text="Family name first; * and ? are wildcards."
    )
    patient_id = forms.CharField(required=False, max_length=worklist.MAX_FILTER_LENGTH, label="Patient ID")
    accession_number = forms.CharField(required=False, max_length=worklist.MAX_FILTER_LENGTH, label="Accession number")
    date_from = forms.DateField(
        required=False,
        label="Study date from",
        input_formats=DATE_FORMATS,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    date_to = forms.DateField(
        required=False, label="Study date to", input_formats=DATE_FORMATS, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    modality = forms.CharField(
        required=False,
        max_length=worklist.MAX_FILTER_LENGTH,
        label="Modality",
        widget=forms.TextInput(attrs={"list": "modality-codes", "autocapitalize": "characters", "spellcheck": "false"}),
    )
    description = forms.CharField(required=False, max_length=200, label="Description")
    shared = forms.BooleanField(required=False, label="Only studies shared with me", widget=forms.CheckboxInput(attrs={"value": "1"}))

    def filters(self) -> worklist.Filters:
        data = self.cleaned_data
        return worklist.Filters(
            patient_name=data["patient_name"],
            patient_id=data["patient_id"],
            accession_number=data["accession_number"],
            date_from=data["date_from"],
            date_to=data["date_to"],
            modality=data["modality"],
            description=data["description"],
            shared_only=data["shared"],
        )


def _presentation(request, name: str, allowed: list[str], default: str, notices: list[str], what: str) -> str:
    """Sort and page size fall back to their default when the URL holds something else (saying so)."""
    value = request.GET.get(name, "")
    if value and value not in allowed:
        notices.append(f"{what} {value[:40]!r} is not one we offer; showing the default instead.")
        return default
    return value or default


def _column_sorts(current: worklist.Sort) -> dict[str, dict]:
    """Per sortable column: the order its header link asks for (the other direction when it is the current one)."""
    columns: dict[str, dict] = {}
    for order in worklist.SORTS.values():
        columns.setdefault(order.column, {"sort": order.name, "aria": ""})  # the first listed is the column's usual way
    columns[current.column] = {
        "sort": ("" if current.descending else "-") + current.column,
        "aria": "descending" if current.descending else "ascending",
    }
    return columns


@member_required
def study_list(request):
    """The worklist; `?shared=1` shows only what other institutions or colleagues shared with the caller."""
    principal = request.principal
    notices: list[str] = []
    sort = _presentation(request, "sort", list(worklist.SORTS), worklist.DEFAULT_SORT, notices, "The order")
    per_page = int(
        _presentation(request, "per_page", [str(n) for n in worklist.PAGE_SIZES], str(worklist.DEFAULT_PAGE_SIZE), notices, "The page size")
    )
    form = WorklistForm(request.GET)
    page, link_error = None, ""
    if form.is_valid():
        try:
            page = worklist.worklist_page(
                principal,
                filters=form.filters(),
                sort=sort,
                per_page=per_page,
                after=request.GET.get("after", ""),
                before=request.GET.get("before", ""),
            )
        except worklist.WorklistError as error:
            if error.parameter in form.fields:
                form.add_error(error.parameter, error.message)
            else:
                link_error = error.message
    if page is not None:
        for study in page.studies:
            study.viewer_url = study_viewer_url(study.study_instance_uid)
            study.shared_by = selectors.shared_by(study) if study.is_shared else ""
        audit.record(
            action="worklist.search",
            request=request,
            object_type="images.study",
            query={key: value for key, value in request.GET.items() if value and key not in ("after", "before")},
            page="next" if request.GET.get("after") else "previous" if request.GET.get("before") else "first",
            results=len(page.studies),
        )
    filtered = any(request.GET.get(name) for name in form.fields)
    # The links of this page carry the query as it was understood: no cursor, sort and page size as shown.
    query = request.GET.copy()
    for name, value, default in (("sort", sort, worklist.DEFAULT_SORT), ("per_page", per_page, worklist.DEFAULT_PAGE_SIZE)):
        if value == default:
            query.pop(name, None)
        else:
            query[name] = str(value)
    for cursor in ("after", "before"):
        query.pop(cursor, None)
    base = reverse("study-list")
    presentation = {name: query[name] for name in ("sort", "per_page") if name in query}
    context = {
        "form": form,
        "page": page,
        "link_error": link_error,
        "query": query,
        "first_page_url": f"{base}?{query.urlencode()}" if query else base,
        "clear_url": f"{base}?{urlencode(presentation)}" if presentation else base,
        "notices": notices,
        "filtered": filtered,
        "sort": worklist.SORTS[sort],
        "sorts": worklist.SORTS.values(),
        "columns": _column_sorts(worklist.SORTS[sort]),
        "per_page": per_page,
        "page_sizes": worklist.PAGE_SIZES,
        "modalities": COMMON_MODALITIES,
        "may_upload": principal.has_role(Role.REGISTER) if principal.institution else False,
    }
    return render(request, "images/study_list.html", context, status=200 if page is not None else 400)
