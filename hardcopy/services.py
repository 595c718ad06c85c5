"""Everything that changes hard-copy state: formats, printers, jobs and their lifecycle; every print is audited."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from subscribers import audit
from subscribers import services as subscriber_services
from subscribers.access import NotVisible, Principal
from subscribers.models import Device, Institution, Role, validate_ae_title

from . import films, selectors, sheet, tiles
from .models import FilmFormat, PrintDevice, PrintJob, PrintJobEvent

PRESETS = [
    {"name": "CT 4x5 lung window", "film_size": "14INX17IN", "rows": 5, "columns": 4, "window_center": -600, "window_width": 1500},
    {"name": "CT 4x5 soft tissue", "film_size": "14INX17IN", "rows": 5, "columns": 4, "window_center": 40, "window_width": 400},
    {"name": "CT 3x4 bone window", "film_size": "14INX17IN", "rows": 4, "columns": 3, "window_center": 400, "window_width": 1800},
    {"name": "MR 3x4", "film_size": "14INX17IN", "rows": 4, "columns": 3},
    {"name": "X-ray 1x1", "film_size": "14INX17IN", "rows": 1, "columns": 1},
    {"name": "Paper A4 2x2", "film_size": "A4", "rows": 2, "columns": 2, "medium": "PAPER", "border_density": "WHITE"},
]


def format_dict(**values) -> dict:
    """A complete, checked film format as a job keeps it (defaults from FilmFormat's fields)."""
    fmt = {name: FilmFormat._meta.get_field(name).get_default() for name in FilmFormat.SNAPSHOT_FIELDS}
    fmt.update({k: v for k, v in values.items() if k in fmt})
    films.check_film_size(fmt["film_size"])
    films.check_layout(int(fmt["rows"]), int(fmt["columns"]))
    if fmt["orientation"] not in (films.PORTRAIT, films.LANDSCAPE):
        raise ValidationError(f"Unknown orientation {fmt['orientation']!r}.", code="orientation_invalid")
    if (fmt["window_center"] is None) != (fmt["window_width"] is None):
        raise ValidationError("Give both the window centre and width, or neither (each image's own window).", code="window_invalid")
    if fmt["window_width"] is not None and float(fmt["window_width"]) < 1:
        raise ValidationError("The window width must be at least 1.", code="window_invalid")
    if not 1 <= int(fmt["copies"]) <= 99:
        raise ValidationError("Print 1 to 99 copies.", code="copies_invalid")
    return fmt


def _require_print(actor: Principal) -> None:
    if actor.kind != "operator":
        actor.require_role(Role.PRINT)


@transaction.atomic
def ensure_presets(*, institution: Institution) -> list[FilmFormat]:
    """The preset formats of an institution, created the first time they are needed."""
    made = []
    for preset in PRESETS:
        fmt = format_dict(**preset)
        found, _ = FilmFormat.objects.get_or_create(institution=institution, name=fmt["name"], defaults=fmt)
        made.append(found)
    return made


@transaction.atomic
def save_film_format(*, actor: Principal, institution: Institution, film_format: FilmFormat | None = None, **values) -> FilmFormat:
    _require_print(actor)
    fmt = format_dict(**values)
    if not (fmt["name"] or "").strip():
        raise ValidationError("A film format needs a name.", code="name_required")
    clash = FilmFormat.objects.filter(institution=institution, name=fmt["name"])
    if film_format is not None:
        clash = clash.exclude(pk=film_format.pk)
    if clash.exists():
        raise ValidationError(f"A film format named {fmt['name']!r} already exists.", code="format_exists")
    if film_format is None:
        film_format = FilmFormat.objects.create(institution=institution, **fmt)
    else:
        for key, value in fmt.items():
            setattr(film_format, key, value)
        film_format.save()
    audit.record(action="print.format.save", principal=actor, institution=institution, obj=film_format)
    return film_format


@transaction.atomic
def register_printer(
    *,
    actor: Principal,
    institution: Institution,
    name: str,
    output: str,
    hot_folder: str = "",
    cups_queue: str = "",
    ae_title: str = "",
    host: str = "",
    port: int | None = None,
    film_sizes: list[str] | None = None,
    media: list[str] | None = None,
    magnifications: list[str] | None = None,
) -> tuple[PrintDevice, str]:
    """Register a print device with its own credential (returned once): an agent's hot folder or CUPS queue, or a
    DICOM film printer the server prints to itself."""
    if output == PrintDevice.Output.HOT_FOLDER and not hot_folder.strip():
        raise ValidationError("A hot-folder printer needs the folder.", code="hot_folder_required")
    if output == PrintDevice.Output.CUPS and not cups_queue.strip():
        raise ValidationError("A CUPS printer needs the queue name.", code="cups_queue_required")
    if output == PrintDevice.Output.DICOM:
        validate_ae_title(ae_title)
        if not host.strip() or not port or not 1 <= int(port) <= 65535:
            raise ValidationError("A DICOM printer needs a host and a port from 1 to 65535.", code="address_invalid")
    elif output not in PrintDevice.Output.values:
        raise ValidationError(f"Unknown printer output {output!r}.", code="output_invalid")
    for size in film_sizes or []:
        films.check_film_size(size)
    kind = Device.Kind.DICOM_PRINTER if output == PrintDevice.Output.DICOM else Device.Kind.FILM_PRINTER
    device, raw = subscriber_services.register_device(actor=actor, institution=institution, name=name, kind=kind, description="printer")
    printer = PrintDevice.objects.create(
        device=device,
        output=output,
        hot_folder=hot_folder.strip(),
        cups_queue=cups_queue.strip(),
        ae_title=ae_title,
        host=host.strip(),
        port=int(port) if port else None,
        film_sizes=list(film_sizes or []),
        media=list(media or []),
        magnifications=list(magnifications or []),
    )
    audit.record(action="print.printer.register", principal=actor, institution=institution, obj=printer, target=printer.target())
    return printer, raw


def _event(job: PrintJob, message: str, *, state: str = "", **detail) -> None:
    PrintJobEvent.objects.create(job=job, state=state, message=message[:500], detail=detail)


def _check_printer_accepts(printer: PrintDevice, fmt: dict) -> None:
    for values, key, what in (
        (printer.film_sizes, "film_size", "film size"),
        (printer.media, "medium", "medium"),
        (printer.magnifications, "magnification_type", "magnification"),
    ):
        if values and fmt[key] not in values:
            raise ValidationError(f"Printer {printer} does not take {what} {fmt[key]} (it takes {', '.join(values)}).", code="refused")


@transaction.atomic
def create_print_job(
    *,
    actor: Principal,
    fmt: dict,
    uids: list[str] | None = None,
    frames: list[tuple] | None = None,
    printer: PrintDevice | None = None,
    film_format: FilmFormat | None = None,
) -> PrintJob:
    """A job for the images named by UIDs (study, series or instance) or by (instance, frame) pairs already chosen
    through the selectors, on printer (None: a PDF to download). Refused with nothing saved when anything is wrong."""
    _require_print(actor)
    fmt = format_dict(**fmt)
    if frames is None:
        if not uids:
            raise ValidationError("Name at least one study, series or image.", code="nothing_to_print")
        frames = selectors.printable_frames(actor, uids)
    if not frames:
        raise ValidationError("Choose at least one image.", code="nothing_to_print")
    capacity = int(fmt["rows"]) * int(fmt["columns"])
    if len(frames) > capacity:
        raise ValidationError(
            f"{len(frames)} images do not fit a {fmt['rows']}x{fmt['columns']} sheet of {capacity} tiles.", code="too_many_images"
        )
    institution = actor.institution
    if printer is not None:
        if printer.device.institution_id != institution.pk:
            raise NotVisible()
        if not printer.device.is_active:
            raise ValidationError(f"Printer {printer} is deactivated.", code="printer_inactive")
        _check_printer_accepts(printer, fmt)
    job = PrintJob.objects.create(
        institution=institution,
        device=printer,
        film_format=film_format,
        format=fmt,
        tiles=[{"sop_instance_uid": instance.sop_instance_uid, "frame": frame} for instance, frame in frames],
        created_by=actor.user,
    )
    _event(job, f"Queued for {printer.target() if printer else 'PDF download'}", state=job.state)
    audit.record(
        action="print.job.create",
        principal=actor,
        institution=institution,
        obj=job,
        printer=str(printer) if printer else "pdf",
        layout=job.layout,
        film_size=fmt["film_size"],
        images=[t["sop_instance_uid"] for t in job.tiles],
    )
    if printer is not None and printer.is_dicom:
        _send_later(job)
    return job


def _send_later(job: PrintJob) -> None:
    from .tasks import print_to_dicom_printer

    transaction.on_commit(lambda: print_to_dicom_printer.delay(job.pk))


def set_state(job: PrintJob, state: str, *, reason: str = "", principal: Principal | None = None, **detail) -> PrintJob:
    """Move a job on and write it down; printed and failed are audit events (patient data left, or did not)."""
    job.state = state
    job.reason = reason[:500]
    job.save(update_fields=["state", "reason", "updated_at", "printer_status", "attempts"])
    _event(job, reason or job.get_state_display(), state=state, **detail)
    if state in (PrintJob.State.PRINTED, PrintJob.State.FAILED):
        audit.record(
            action=f"print.job.{state}",
            principal=principal,
            institution=job.institution,
            obj=job,
            outcome="success" if state == PrintJob.State.PRINTED else "failure",
            actor="" if principal else (str(job.device) if job.device else "server"),
            reason=reason,
            images=[t["sop_instance_uid"] for t in job.tiles],
        )
    return job


# Which state a device may report from which: a job only moves forward, and never leaves a closed state.
DEVICE_MOVES = {
    PrintJob.State.QUEUED: {PrintJob.State.FETCHED, PrintJob.State.PRINTING, PrintJob.State.FAILED},
    PrintJob.State.FETCHED: {PrintJob.State.PRINTING, PrintJob.State.FAILED},
    PrintJob.State.PRINTING: {PrintJob.State.PRINTED, PrintJob.State.FAILED},
}


@transaction.atomic
def report_progress(*, principal: Principal, job_id, state: str, reason: str = "") -> PrintJob:
    """A device reports its job's progress or outcome."""
    job = (
        selectors.open_jobs_for_device(principal).select_for_update(of=("self",)).filter(pk=job_id).first()
        if str(job_id).isdigit()
        else None
    )
    if job is None:
        raise NotVisible()
    if state not in DEVICE_MOVES.get(job.state, set()):
        raise ValidationError(f"A {job.state} job cannot become {state!r}.", code="state_invalid")
    if state == PrintJob.State.FAILED and not reason.strip():
        raise ValidationError("Say why the job failed.", code="reason_required")
    PrintDevice.objects.filter(pk=job.device_id).update(last_seen_at=timezone.now())
    return set_state(job, state, reason=reason.strip(), principal=principal)


@transaction.atomic
def cancel_job(*, actor: Principal, job: PrintJob) -> PrintJob:
    _require_print(actor)
    job = PrintJob.objects.select_for_update(of=("self",)).get(pk=selectors.get_job(actor, job.pk).pk)
    if not job.is_open:
        raise ValidationError(f"A {job.get_state_display().lower()} job cannot be cancelled.", code="not_open")
    set_state(job, PrintJob.State.CANCELLED, reason=f"Cancelled by {actor.label()}")
    audit.record(action="print.job.cancel", principal=actor, institution=job.institution, obj=job)
    return job


@transaction.atomic
def retry_job(*, actor: Principal, job: PrintJob) -> PrintJob:
    """A failed or cancelled job queued again for its printer, as it was."""
    _require_print(actor)
    job = PrintJob.objects.select_for_update(of=("self",)).get(pk=selectors.get_job(actor, job.pk).pk)
    if job.state not in (PrintJob.State.FAILED, PrintJob.State.CANCELLED) or job.device is None:
        raise ValidationError("Only a failed or cancelled job sent to a printer can be retried.", code="not_retryable")
    job.attempts += 1
    job.printer_status = {}
    set_state(job, PrintJob.State.QUEUED, reason="")
    audit.record(action="print.job.retry", principal=actor, institution=job.institution, obj=job, attempt=job.attempts + 1)
    if job.device.is_dicom:
        _send_later(job)
    return job


def server_tiles(job: PrintJob) -> list[sheet.Tile]:
    """The job's images rendered on the server (for the PDF download, the preview and DICOM printers)."""
    instances = selectors.job_instances(job)
    return [tiles.render_tile(instances[t["sop_instance_uid"]], t["frame"], job.format) for t in job.tiles]


def render_pdf(*, actor: Principal, job: PrintJob) -> bytes:
    """The job's sheet as a PDF for the person to save or print; audited like any print."""
    _require_print(actor)
    job = selectors.get_job(actor, job.pk)
    data = sheet.compose_pdf(job.format, server_tiles(job))
    audit.record(
        action="print.pdf.download",
        principal=actor,
        institution=job.institution,
        obj=job,
        images=[t["sop_instance_uid"] for t in job.tiles],
    )
    if job.device is None and job.state == PrintJob.State.QUEUED:
        set_state(job, PrintJob.State.PRINTED, reason="PDF downloaded", principal=actor)
    return data


def preview_png(*, actor: Principal, fmt: dict, frames: list[tuple]) -> bytes:
    """A small picture of the sheet before anything is printed."""
    _require_print(actor)
    fmt = format_dict(**fmt)
    capacity = int(fmt["rows"]) * int(fmt["columns"])
    if len(frames) > capacity:
        raise ValidationError(f"{len(frames)} images do not fit a {fmt['rows']}x{fmt['columns']} sheet of {capacity} tiles.")
    images = [tiles.render_tile(instance, frame, fmt) for instance, frame in frames]
    audit.record(action="print.preview", principal=actor, images=[i.sop_instance_uid for i, _ in frames])
    return sheet.compose_preview(fmt, images)
