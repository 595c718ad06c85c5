"""The study page (header, series with thumbnails and imaging conditions, shares, audit trail) and zip downloads.

Everything starts from `selectors.get_study`: a study the caller may not see is "not found", whoever owns it.
"""

from __future__ import annotations

from django.db.models import Count, F, Q
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from subscribers import audit
from subscribers.decorators import member_required
from subscribers.models import Role
from subscribers.selectors import audit_events_visible_to

from .. import conditions, selectors, study_actions, zipdownload
from ..models import Study
from ..viewer import study_viewer_url
from . import share as share_views

THUMBNAIL_VIEWPORT = "256,256"  # rendered at twice the size shown, for sharp thumbnails on high-density screens
AUDIT_TRAIL_LIMIT = 200
SEX = {"F": "Female", "M": "Male", "O": "Other"}


def may_share(principal, study: Study) -> bool:
    """What images.sharing.services enforces, asked beforehand so the page offers only what will work."""
    return principal.institution_id == study.institution_id and (principal.has_role(Role.ADMIN) or principal.has_role(Role.RECEIVE))


def _series_rows(principal, study: Study) -> list[dict]:
    series = (
        selectors.series_visible_to(principal)
        .filter(study=study)
        .annotate(image_count=Count("instances", filter=Q(instances__rows__isnull=False, instances__columns__isnull=False)))
        .order_by(F("series_number").asc(nulls_last=True), "pk")
    )
    rows = []
    for one in series:
        kwargs = {"study_uid": study.study_instance_uid, "series_uid": one.series_instance_uid}
        rows.append(
            {
                "series": one,
                "conditions": conditions.describe(one.conditions, one.modality),
                "thumbnail_url": (
                    reverse("dicomweb-series-thumbnail", kwargs={"study": study.study_instance_uid, "series": one.series_instance_uid})
                    + f"?viewport={THUMBNAIL_VIEWPORT}"
                    if one.image_count
                    else ""
                ),
                "download_url": reverse("series-download", kwargs=kwargs),
            }
        )
    return rows


def _audit_trail(principal, study: Study, shares) -> list:
    """Events of the owner institution about this study, its series and instances, and its shares (latest first)."""
    series_ids = list(study.series.values_list("pk", "series_instance_uid"))
    about = (
        Q(object_type="images.study", object_id__in=[study.study_instance_uid, str(study.pk)])
        | Q(object_type="images.series", object_id__in=[str(v) for pair in series_ids for v in pair])
        | Q(object_type="images.share", object_id__in=[str(s.pk) for s in shares])
        | Q(detail__study_instance_uid=study.study_instance_uid)
    )
    return list(audit_events_visible_to(principal).filter(about).order_by("-at", "-id")[:AUDIT_TRAIL_LIMIT])


def render_study_page(request, study: Study, *, share_form=None, status: int = 200):
    """The study page; the share views render it again with a refused form (and the dialog open) on an error."""
    principal = request.principal
    is_owner = principal.institution_id == study.institution_id
    shares = list(selectors.shares_of_study(principal, study)) if is_owner else []
    can_share = may_share(principal, study)
    show_audit = is_owner and principal.has_role(Role.ADMIN)
    uid = study.study_instance_uid
    context = {
        "study": study,
        "patient": study.patient,
        "sex": SEX.get(study.patient.patient_sex, study.patient.patient_sex),
        "is_owner": is_owner,
        "series_rows": _series_rows(principal, study),
        "viewer_url": study_viewer_url(uid),
        "download_url": reverse("study-download", kwargs={"study_uid": uid}),
        "study_actions": study_actions.actions_for(principal, study),
        "shares": shares,
        "can_share": can_share,
        "share_form": share_form if share_form is not None else (share_views.ShareForm(owner=study.institution) if can_share else None),
        "share_dialog_open": share_form is not None or (can_share and request.GET.get("share") == "1"),
        "audit_events": _audit_trail(principal, study, shares) if show_audit else None,
        "audit_limit": AUDIT_TRAIL_LIMIT,
        "now": timezone.now(),
    }
    return render(request, "images/study_detail.html", context, status=status)


@require_GET
@member_required
def study_detail(request, study_uid):
    principal = request.principal
    study = selectors.get_study(principal, study_uid)
    audit.record(
        action="study.view",
        principal=principal,
        request=request,
        object_type="images.study",
        object_id=study.study_instance_uid,
        object_repr=str(study),
        study_instance_uid=study.study_instance_uid,
        **({"shared_by_institution": study.institution_id} if study.institution_id != principal.institution_id else {}),
    )
    return render_study_page(request, study)


def _zip_response(request, download: zipdownload.ZipDownload) -> StreamingHttpResponse:
    zipdownload.record_download(request.principal, download, address=audit.client_address(request))
    response = StreamingHttpResponse(download.chunks, content_type="application/zip")
    response["Content-Length"] = str(download.size)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=download.filename)
    # Patient data: never kept by a shared cache, nor by the browser beyond this download.
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
@member_required
def study_download(request, study_uid):
    return _zip_response(request, zipdownload.prepare(request.principal, study_uid=study_uid))


@require_GET
@member_required
def series_download(request, study_uid, series_uid):
    return _zip_response(request, zipdownload.prepare(request.principal, study_uid=study_uid, series_uid=series_uid))
