"""Portal pages of the software app: the catalogue and downloads, licences (provider staff), the Process page of a study,
and processing jobs."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from images import selectors as image_selectors
from subscribers import audit
from subscribers.access import NotVisible
from subscribers.decorators import provider_staff_required, role_required
from subscribers.models import Role
from subscribers.selectors import institutions_visible_to

from . import forms, selectors
from .errors import ArtifactCorrupted, InvalidParameters, LicenceRefused
from .models import Delivery, LicenceRequest, ProcessingJob, Software
from .processors import registry
from .services import catalogue, jobs, licences

software_required = role_required(Role.SOFTWARE)


def _catalogue_check(principal):
    if not principal.is_provider_staff:
        principal.require_role(Role.SOFTWARE)


def _jobs_check(principal):
    if not (principal.has_role(Role.SOFTWARE) or principal.has_role(Role.ADMIN)):
        principal.require_role(Role.SOFTWARE)


def _login_then(check):
    """Log in first, then pass `check` (which raises 403 naming the missing role)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.principal.is_authenticated:
                return redirect_to_login(request.get_full_path())
            check(request.principal)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


catalogue_required = _login_then(_catalogue_check)
jobs_required = _login_then(_jobs_check)


# --- Catalogue --------------------------------------------------------------------------------------------------------


@catalogue_required
def catalogue_page(request):
    principal = request.principal
    context = {
        "entries": selectors.catalogue_for(principal),
        "unavailable": registry.unavailable().values(),
        "is_staff": principal.is_provider_staff,
        "pending_requests": selectors.licence_requests_visible_to(principal).filter(status=LicenceRequest.Status.PENDING).count()
        if principal.is_provider_staff
        else 0,
        "register_form": forms.SoftwareForm() if principal.is_provider_staff else None,
    }
    return render(request, "software/catalogue.html", context)


def _detail_context(request, software: Software, **extra) -> dict:
    principal = request.principal
    entry = next((e for e in selectors.catalogue_for(principal) if e.software.pk == software.pk), None)
    context = {
        "software": software,
        "entry": entry,
        "versions": list(software.versions.order_by("-released_at", "-pk")),
        "is_staff": principal.is_provider_staff,
        "may_request": principal.has_role(Role.SOFTWARE) and entry is not None and not entry.licensed,
        "pending_request": selectors.licence_requests_visible_to(principal)
        .filter(software=software, status=LicenceRequest.Status.PENDING)
        .first()
        if principal.institution
        else None,
    }
    if principal.is_provider_staff:
        context["licences"] = list(selectors.licences_visible_to(principal).filter(software=software))
        context.setdefault("version_form", forms.VersionForm())
        context.setdefault("grant_form", forms.GrantForm(institutions=institutions_visible_to(principal)))
    context.update(extra)
    return context


@catalogue_required
def software_detail(request, software_id: int):
    software = selectors.get_software(request.principal, software_id)
    return render(request, "software/software_detail.html", _detail_context(request, software))


@provider_staff_required
@require_POST
def software_register(request):
    form = forms.SoftwareForm(request.POST)
    if form.is_valid():
        try:
            software = catalogue.register_software(actor=request.principal, **form.cleaned_data)
        except ValidationError as error:
            _add_errors(form, error)
        else:
            messages.success(request, f"{software.name} is in the catalogue.")
            return redirect("software-detail", software_id=software.pk)
    context = {
        "entries": selectors.catalogue_for(request.principal),
        "is_staff": True,
        "register_form": form,
        "unavailable": registry.unavailable().values(),
    }
    return render(request, "software/catalogue.html", context, status=400)


@provider_staff_required
@require_POST
def version_upload(request, software_id: int):
    software = selectors.get_software(request.principal, software_id)
    form = forms.VersionForm(request.POST, request.FILES)
    if form.is_valid():
        artifact = form.cleaned_data["artifact"]
        try:
            version = catalogue.add_version(
                actor=request.principal,
                software=software,
                version=form.cleaned_data["version"],
                platform=form.cleaned_data["platform"],
                release_notes=form.cleaned_data["release_notes"],
                fileobj=artifact,
                file_name=artifact.name,
            )
        except ValidationError as error:
            _add_errors(form, error)
        else:
            messages.success(request, f"Version {version.version} ({version.platform}) stored, SHA-256 {version.sha256}.")
            return redirect("software-detail", software_id=software.pk)
    return render(request, "software/software_detail.html", _detail_context(request, software, version_form=form), status=400)


@provider_staff_required
@require_POST
def licence_grant(request, software_id: int):
    software = selectors.get_software(request.principal, software_id)
    form = forms.GrantForm(request.POST, institutions=institutions_visible_to(request.principal))
    if form.is_valid():
        values = form.cleaned_data
        try:
            licence, created = licences.grant_licence(
                actor=request.principal,
                institution=values["institution"],
                software=software,
                valid_from=values["valid_from"],
                valid_until=values["valid_until"],
                usage_quota=values["usage_quota"],
                seats=values["seats"],
            )
        except ValidationError as error:
            _add_errors(form, error)
        else:
            messages.success(request, f"{licence.institution} is {'now' if created else 'still'} licensed for {software.name}.")
            return redirect("software-detail", software_id=software.pk)
    return render(request, "software/software_detail.html", _detail_context(request, software, grant_form=form), status=400)


@software_required
@require_POST
def licence_request(request, software_id: int):
    software = selectors.get_software(request.principal, software_id)
    try:
        created, new = licences.request_licence(principal=request.principal, software=software, message=request.POST.get("message", ""))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request, "Your request was sent to the provider." if new else "Your institution's request is already with the provider."
        )
    return redirect("software-detail", software_id=software.pk)


@software_required
def version_download(request, version_id: int):
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    principal = request.principal
    version = selectors.get_version(principal, version_id)
    try:
        fh = catalogue.open_download(principal=principal, version=version, address=audit.client_address(request))
    except LicenceRefused as refusal:
        return render(request, "software/refused.html", {"software": version.software, "reason": refusal.reason}, status=403)
    except ArtifactCorrupted as error:
        return render(request, "software/refused.html", {"software": version.software, "reason": error.reason}, status=409)
    response = FileResponse(fh, content_type="application/octet-stream")
    response["Content-Length"] = str(version.size_bytes)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=version.file_name)
    response["X-Checksum-SHA256"] = version.sha256
    response["Cache-Control"] = "private, no-store"
    return response


@provider_staff_required
def licence_requests(request):
    found = selectors.licence_requests_visible_to(request.principal).order_by("status", "-created_at")[:500]
    return render(request, "software/requests.html", {"requests": found})


@provider_staff_required
@require_POST
def licence_request_refuse(request, request_id: int):
    found = selectors.licence_requests_visible_to(request.principal).filter(pk=request_id).first()
    if found is None:
        raise NotVisible()
    try:
        licences.refuse_request(actor=request.principal, request=found, note=request.POST.get("note", ""))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("software-requests")


def _add_errors(form, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


# --- The Process page of a study ------------------------------------------------------------------------------------


@software_required
def process_study(request, study_uid: str):
    """Choose a processing type, its parameters and the images of a study; POST submits the job."""
    principal = request.principal
    study = image_selectors.get_study(principal, study_uid)
    if study.institution_id != principal.institution_id:
        raise NotVisible()  # a receiver processes its own images only
    types = selectors.processing_types_for(principal)
    data = request.POST if request.method == "POST" else request.GET
    chosen = next((row for row in types if row["processor"] is not None and row["processor"].id == data.get("type")), None)
    series = list(image_selectors.series_visible_to(principal).filter(study=study).order_by("series_number", "pk"))
    form = None
    status = 200
    if chosen is not None:
        form = forms.ProcessForm(
            chosen["processor"], data if request.method == "POST" else None, series=series, aes=selectors.receiving_aes(principal)
        )
        if request.method == "POST" and form.is_valid():
            try:
                job = jobs.submit_job(
                    principal=principal,
                    processor_id=chosen["processor"].id,
                    parameters=form.parameters(),
                    uids=form.uids(study),
                    delivery=form.cleaned_data["delivery"],
                    push_ae=form.cleaned_data.get("push_ae"),
                    origin=ProcessingJob.Origin.PORTAL,
                    address=audit.client_address(request),
                )
            except LicenceRefused as refusal:
                form.add_error(None, refusal.reason)
                status = 403
            except InvalidParameters as error:
                form.add_error(f"param_{error.parameter}" if f"param_{error.parameter}" in form.fields else None, error.messages[0])
                status = 400
            except ValidationError as error:
                form.add_error(None, " ".join(error.messages))
                status = 400
            else:
                messages.success(request, f"Job {job.pk} ({job.processor_name}) is queued.")
                return redirect("processing-job", job_id=job.pk)
        elif request.method == "POST":
            status = 400
    elif request.method == "POST":
        raise PermissionDenied("Choose an available processing type.")
    return render(
        request,
        "software/process.html",
        {"study": study, "types": types, "chosen": chosen, "form": form, "series": series},
        status=status,
    )


# --- Jobs -------------------------------------------------------------------------------------------------------------


@jobs_required
def job_list(request):
    found = selectors.jobs_visible_to(request.principal).select_related("study")[:200]
    return render(request, "software/job_list.html", {"jobs": found})


@jobs_required
def job_detail(request, job_id: int):
    principal = request.principal
    job = selectors.get_job(principal, job_id)
    products = list(job.products.order_by("series_instance_uid", "pk").values("series_instance_uid", "institution_id"))
    research = any(p["institution_id"] != job.institution_id for p in products)
    series = []
    if not research and job.study_id:
        counts = {}
        for p in products:
            counts[p["series_instance_uid"]] = counts.get(p["series_instance_uid"], 0) + 1
        study_uid = job.study.study_instance_uid
        series = [
            {
                "uid": uid,
                "count": count,
                "download_url": reverse("series-download", kwargs={"study_uid": study_uid, "series_uid": uid}),
            }
            for uid, count in counts.items()
        ]
    context = {
        "job": job,
        "items": job.items.order_by("position"),
        "product_series": series,
        "research_count": len(products) if research else 0,
        "research_institution": getattr(getattr(job.institution, "research_collection", None), "research_institution", None)
        if research
        else None,
        "may_cancel": principal.has_role(Role.SOFTWARE) and not job.is_finished,
        "delivery_push": job.delivery == Delivery.PUSH,
        "refresh": not job.is_finished,
    }
    return render(request, "software/job_detail.html", context)


@software_required
@require_POST
def job_cancel(request, job_id: int):
    job = selectors.get_job(request.principal, job_id)
    try:
        job = jobs.cancel_job(principal=request.principal, job=job, address=audit.client_address(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request, "The job was cancelled." if job.status == ProcessingJob.Status.CANCELLED else "The job will stop at its next step."
        )
    return redirect("processing-job", job_id=job.pk)
