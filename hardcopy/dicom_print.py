"""The DICOM Print SCU for film printers (PS3.4 Annex H, Basic Grayscale Print Management Meta SOP Class).

N-GET the printer's status, N-CREATE a film session and a film box with the layout, N-SET each image box with the
preformatted 8-bit MONOCHROME2 pixels (the frame after the job's VOI), N-ACTION print, N-DELETE the session. The
printer's statuses and N-EVENT-REPORTs are written on the job; any failure, a refusal or a dropped association, fails
the job with the reason and nothing is reported as printed.
"""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db import transaction
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    BasicFilmBox,
    BasicFilmSession,
    BasicGrayscaleImageBox,
    BasicGrayscalePrintManagementMeta,
    Printer,
    PrinterInstance,
)
from pynetdicom.status import code_to_category

from images import rendering

from . import selectors, services, tiles
from .models import PrintJob

log = logging.getLogger(__name__)
META = BasicGrayscalePrintManagementMeta
TIMEOUT = 60


class PrintFailed(Exception):
    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _checked(step: str, status: Dataset) -> Dataset:
    code = getattr(status, "Status", None)
    if code is None:
        raise PrintFailed(f"{step}: the printer did not answer (association dropped or timed out)")
    if code_to_category(code) not in ("Success", "Warning"):
        comment = f" ({status.ErrorComment})" if "ErrorComment" in status else ""
        raise PrintFailed(f"{step}: the printer refused with DICOM status 0x{code:04X}{comment}", status=code)
    return status


def image_box_pixels(image) -> Dataset:
    """PS3.3 C.13.5.1 Preformatted Grayscale Image Sequence item: 8-bit MONOCHROME2 after the VOI."""
    pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    item = Dataset()
    item.SamplesPerPixel = 1
    item.PhotometricInterpretation = "MONOCHROME2"
    item.Rows, item.Columns = pixels.shape
    item.PixelAspectRatio = [1, 1]
    item.BitsAllocated, item.BitsStored, item.HighBit, item.PixelRepresentation = 8, 8, 7, 0
    item.PixelData = pixels.tobytes()
    return item


def _note(job_id: int, message: str, **detail) -> None:
    job = PrintJob.objects.get(pk=job_id)
    services._event(job, message, **detail)


def print_job(*, job_id: int) -> PrintJob:
    """Print a queued job on its DICOM printer; safe to call twice (only a queued job is sent)."""
    with transaction.atomic():
        job = PrintJob.objects.select_for_update(of=("self",)).select_related("device__device", "institution").get(pk=job_id)
        if job.state != PrintJob.State.QUEUED or job.device is None or not job.device.is_dicom:
            return job
        services.set_state(job, PrintJob.State.PRINTING, reason=f"Sending to {job.device.target()}")
    try:
        images = _images(job)
        statuses = _send(job, images)
    except PrintFailed as failure:
        log.warning("print job %s failed: %s", job_id, failure.reason)
        with transaction.atomic():
            job = PrintJob.objects.select_for_update(of=("self",)).get(pk=job_id)
            job.printer_status = {**job.printer_status, "failure": failure.reason, "status": failure.status}
            services.set_state(job, PrintJob.State.FAILED, reason=failure.reason)
        return job
    with transaction.atomic():
        job = PrintJob.objects.select_for_update(of=("self",)).get(pk=job_id)
        job.printer_status = {**job.printer_status, **statuses}
        for report in statuses.get("event_reports", []):
            services._event(job, f"Printer event {report['event_type_id']}: {report['status']} {report['info']}".strip(), **report)
        services.set_state(job, PrintJob.State.PRINTED, reason=f"Printed on {job.device.target()}")
    return job


def _images(job: PrintJob) -> list:
    instances = selectors.job_instances(job)
    window = tiles.window_of(job.format)
    out = []
    for tile in job.tiles:
        instance = instances.get(tile["sop_instance_uid"])
        if instance is None:
            raise PrintFailed(f"Image {tile['sop_instance_uid']} is no longer in the archive.")
        try:
            out.append(rendering.render_image(instance, tile["frame"], window=window))
        except rendering.RenderingError as error:
            raise PrintFailed(f"Image {tile['sop_instance_uid']}: {error.reason}") from error
    return out


def _send(job: PrintJob, images: list) -> dict:
    printer, fmt = job.device, job.format
    reports: list[dict] = []

    def on_event_report(event):
        # PS3.4 H.4.1.2 / H.4.4.2: printer and print job status changes.
        info = event.event_information or Dataset()
        reports.append(
            {
                "event_type_id": event.event_type,
                "class": str(event.request.AffectedSOPClassUID),
                "status": str(info.get("PrinterStatus", info.get("ExecutionStatus", ""))),
                "info": str(info.get("PrinterStatusInfo", info.get("ExecutionStatusInfo", ""))),
            }
        )
        return 0x0000, None

    ae = AE(ae_title=settings.DICOM_AET)
    ae.add_requested_context(META)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    assoc = ae.associate(
        printer.host, int(printer.port), ae_title=printer.ae_title, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)]
    )
    if not assoc.is_established:
        raise PrintFailed(f"Cannot open an association with {printer.target()} (refused, aborted or unreachable).")
    result: dict = {}
    try:
        status, attrs = assoc.send_n_get([0x21100010, 0x21100020], Printer, PrinterInstance, meta_uid=META)
        if getattr(status, "Status", None) == 0x0000 and attrs is not None:
            result["printer_status"] = str(attrs.get("PrinterStatus", ""))
            result["printer_status_info"] = str(attrs.get("PrinterStatusInfo", ""))
            if result["printer_status"] == "FAILURE":
                raise PrintFailed(f"The printer reports FAILURE: {result['printer_status_info']}")

        session = Dataset()
        session.NumberOfCopies = str(int(fmt.get("copies") or 1))
        session.MediumType = fmt.get("medium") or "BLUE FILM"
        session_uid = generate_uid()
        status, _ = assoc.send_n_create(session, BasicFilmSession, session_uid, meta_uid=META)
        _checked("N-CREATE film session", status)

        box = Dataset()
        box.ImageDisplayFormat = f"STANDARD\\{int(fmt['columns'])},{int(fmt['rows'])}"
        box.FilmOrientation = fmt.get("orientation") or "PORTRAIT"
        box.FilmSizeID = fmt["film_size"]
        box.MagnificationType = fmt.get("magnification_type") or "CUBIC"
        box.BorderDensity = fmt.get("border_density") or "BLACK"
        box.EmptyImageDensity = fmt.get("border_density") or "BLACK"
        reference = Dataset()
        reference.ReferencedSOPClassUID = BasicFilmSession
        reference.ReferencedSOPInstanceUID = session_uid
        box.ReferencedFilmSessionSequence = Sequence([reference])
        box_uid = generate_uid()
        status, created = _n_create_box(assoc, box, box_uid)
        image_boxes = [item.ReferencedSOPInstanceUID for item in (created or Dataset()).get("ReferencedImageBoxSequence", [])]
        if len(image_boxes) < len(images):
            raise PrintFailed(f"The printer made {len(image_boxes)} image boxes for {len(images)} images.")

        for position, (uid, image) in enumerate(zip(image_boxes, images, strict=False), start=1):
            content = Dataset()
            content.ImageBoxPosition = position
            content.BasicGrayscaleImageSequence = Sequence([image_box_pixels(image)])
            status, _ = assoc.send_n_set(content, BasicGrayscaleImageBox, uid, meta_uid=META)
            _checked(f"N-SET image box {position}", status)

        status, action = assoc.send_n_action(None, 1, BasicFilmBox, box_uid, meta_uid=META)
        _checked("N-ACTION print", status)
        result["print_status"] = f"0x{status.Status:04X}"
        if action is not None and "ReferencedPrintJobSequence" in action:
            result["print_job_uids"] = [str(i.ReferencedSOPInstanceUID) for i in action.ReferencedPrintJobSequence]
        _checked("N-DELETE film session", assoc.send_n_delete(BasicFilmSession, session_uid, meta_uid=META))
    finally:
        if assoc.is_established:
            assoc.release()
        result["event_reports"] = reports
    return result


def _n_create_box(assoc, box: Dataset, box_uid: str):
    status, created = assoc.send_n_create(box, BasicFilmBox, box_uid, meta_uid=META)
    _checked(f"N-CREATE film box {box.ImageDisplayFormat} on {box.FilmSizeID}", status)
    return status, created
