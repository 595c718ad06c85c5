"""Portal pages of hard copy: compose a sheet from a study, the job list, retry, cancel, PDF download."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from images import rendering
from subscribers.access import NotVisible
from subscribers.decorators import role_required
from subscribers.models import Role

from . import selectors, services

print_required = role_required(Role.PRINT)
MODES = ("all", "every", "pick")


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class Composition:
    """What the compose form asks for, read from GET (preview) or POST (send), checked against the caller's view."""

    def __init__(self, principal, study_uid: str, data):
        self.study, self.series_list = selectors.study_for_composing(principal, study_uid)
        self.formats = list(selectors.formats_visible_to(principal))
        self.printers = list(selectors.printers_visible_to(principal).filter(device__is_active=True))
        self.format = next((f for f in self.formats if str(f.pk) == data.get("format")), self.formats[0] if self.formats else None)
        self.series = next((s for s in self.series_list if s.series_instance_uid == data.get("series")), None)
        if self.series is None and self.series_list:
            self.series = self.series_list[0]
        self.mode = data.get("mode") if data.get("mode") in MODES else "all"
        self.every = max(1, _int(data.get("every"), 2))
        self.picked = set(data.getlist("pick")) if hasattr(data, "getlist") else set()
        self.printer_choice = data.get("printer", "pdf")
        self.instances = []
        if self.series is not None:
            self.instances = selectors.printable_frames(principal, [self.series.series_instance_uid])

    @property
    def frames(self) -> list[tuple]:
        frames = self.instances
        if self.mode == "every":
            frames = frames[:: self.every]
        elif self.mode == "pick":
            frames = [(i, f) for i, f in frames if f"{i.sop_instance_uid}:{f}" in self.picked]
        return frames

    @property
    def choices(self) -> list[dict]:
        return [
            {"instance": i, "frame": f, "key": f"{i.sop_instance_uid}:{f}", "checked": f"{i.sop_instance_uid}:{f}" in self.picked}
            for i, f in self.instances
        ]

    @property
    def printer(self):
        if self.printer_choice == "pdf":
            return None
        found = next((p for p in self.printers if str(p.pk) == self.printer_choice), None)
        if found is None:
            raise NotVisible()
        return found


@print_required
def compose(request, study_uid: str):
    principal = request.principal
    services.ensure_presets(institution=principal.institution)
    data = request.POST if request.method == "POST" else request.GET
    composition = Composition(principal, study_uid, data)
    if request.method == "POST":
        try:
            if composition.format is None:
                raise ValidationError("Choose a film format.")
            job = services.create_print_job(
                actor=principal,
                fmt=composition.format.snapshot(),
                frames=composition.frames,
                printer=composition.printer,
                film_format=composition.format,
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            if job.device is None:
                return redirect("print-job-pdf", job_id=job.pk)
            messages.success(request, f"Print job {job.pk} sent to {job.device}.")
            return redirect("print-jobs")
    return render(
        request,
        "hardcopy/compose.html",
        {
            "c": composition,
            "query": data.urlencode(),
            "capacity": composition.format.rows * composition.format.columns if composition.format else 0,
        },
        status=400 if request.method == "POST" else 200,
    )


@print_required
def compose_preview(request, study_uid: str):
    composition = Composition(request.principal, study_uid, request.GET)
    if composition.format is None:
        raise NotVisible()
    try:
        data = services.preview_png(actor=request.principal, fmt=composition.format.snapshot(), frames=composition.frames)
    except (ValidationError, rendering.RenderingError) as error:
        reason = " ".join(error.messages) if isinstance(error, ValidationError) else error.reason
        return HttpResponse(reason, status=400, content_type="text/plain; charset=utf-8")
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response


@print_required
def job_list(request):
    jobs = list(selectors.jobs_visible_to(request.principal)[:200])
    return render(request, "hardcopy/job_list.html", {"jobs": jobs})


@print_required
def job_detail(request, job_id: int):
    job = selectors.get_job(request.principal, job_id)
    return render(request, "hardcopy/job_detail.html", {"job": job, "events": list(job.events.all())})


@print_required
def job_pdf(request, job_id: int):
    job = selectors.get_job(request.principal, job_id)
    data = services.render_pdf(actor=request.principal, job=job)
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="print-job-{job.pk}.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response


def _change(request, job_id: int, service, done: str):
    job = selectors.get_job(request.principal, job_id)
    try:
        service(actor=request.principal, job=job)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Print job {job.pk} {done}.")
    return redirect("print-jobs")


@require_POST
@print_required
def job_cancel(request, job_id: int):
    return _change(request, job_id, services.cancel_job, "cancelled")


@require_POST
@print_required
def job_retry(request, job_id: int):
    return _change(request, job_id, services.retry_job, "queued again")
