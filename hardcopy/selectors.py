"""Read queries of hard copy, scoped to the caller: formats, printers and jobs of its institution; for a device, the
images named in its open jobs and nothing else."""

from __future__ import annotations

from django.db.models import F, QuerySet

from images.models import Instance, Series, Study
from images.selectors import instances_visible_to, series_visible_to, studies_visible_to
from subscribers.access import NotVisible, Principal

from .models import FilmFormat, PrintDevice, PrintJob


def _own(principal: Principal) -> int | None:
    if principal is None or principal.institution is None or principal.kind == "device":
        return None
    return principal.institution_id


def formats_visible_to(principal: Principal) -> QuerySet[FilmFormat]:
    institution_id = _own(principal)
    return FilmFormat.objects.filter(institution_id=institution_id) if institution_id else FilmFormat.objects.none()


def printers_visible_to(principal: Principal) -> QuerySet[PrintDevice]:
    institution_id = _own(principal)
    if not institution_id:
        return PrintDevice.objects.none()
    return PrintDevice.objects.filter(device__institution_id=institution_id).select_related("device")


def jobs_visible_to(principal: Principal) -> QuerySet[PrintJob]:
    """A person's institution's jobs; a device's own jobs."""
    if principal is not None and principal.kind == "device" and principal.device is not None:
        return PrintJob.objects.filter(device__device=principal.device, institution_id=principal.institution_id)
    institution_id = _own(principal)
    if not institution_id:
        return PrintJob.objects.none()
    return PrintJob.objects.filter(institution_id=institution_id).select_related("device__device", "created_by")


def get_job(principal: Principal, job_id) -> PrintJob:
    job = jobs_visible_to(principal).filter(pk=job_id).first() if str(job_id).isdigit() else None
    if job is None:
        raise NotVisible()
    return job


def open_jobs_for_device(principal: Principal) -> QuerySet[PrintJob]:
    if principal is None or principal.kind != "device":
        return PrintJob.objects.none()
    return jobs_visible_to(principal).filter(state__in=PrintJob.OPEN_STATES).order_by("created_at", "pk")


def job_instances(job: PrintJob, uids: set[str] | None = None) -> dict[str, Instance]:
    """The instances a job names (or those of uids it names), by SOP Instance UID, from the job's own institution only."""
    named = {tile["sop_instance_uid"] for tile in job.tiles}
    found = Instance.objects.filter(institution_id=job.institution_id, sop_instance_uid__in=named & uids if uids else named)
    found = found.select_related("series", "study__patient", "institution")
    return {instance.sop_instance_uid: instance for instance in found}


def instance_for_device(principal: Principal, job_id, sop_instance_uid: str, frame: int) -> tuple[PrintJob, Instance]:
    """An image a device may fetch: named (with this frame) in an open job sent to this device. NotVisible otherwise."""
    job = open_jobs_for_device(principal).filter(pk=job_id).first() if str(job_id).isdigit() else None
    if job is None or {"sop_instance_uid": sop_instance_uid, "frame": frame} not in job.tiles:
        raise NotVisible()
    instance = job_instances(job, {sop_instance_uid}).get(sop_instance_uid)
    if instance is None:
        raise NotVisible()
    return job, instance


def printable_frames(principal: Principal, uids: list[str]) -> list[tuple[Instance, int]]:
    """Every frame of the images named by study, series or SOP Instance UIDs of the caller's own institution, in order
    (series number, instance number). A UID that names nothing the caller owns is NotVisible, as if it did not exist."""
    institution_id = _own(principal)
    if not institution_id:
        raise NotVisible()
    order = (F("series__series_number").asc(nulls_last=True), F("instance_number").asc(nulls_last=True), "pk")
    images = (
        instances_visible_to(principal)
        .filter(institution_id=institution_id, rows__isnull=False)
        .select_related("series", "study__patient", "institution")
    )
    frames: list[tuple[Instance, int]] = []
    for uid in uids:
        uid = (uid or "").strip()
        if studies_visible_to(principal).filter(institution_id=institution_id, study_instance_uid=uid).exists():
            found = images.filter(study__study_instance_uid=uid).order_by(*order)
        elif series_visible_to(principal).filter(institution_id=institution_id, series_instance_uid=uid).exists():
            found = images.filter(series__series_instance_uid=uid).order_by(*order)
        else:
            found = images.filter(sop_instance_uid=uid)
        found = list(found)
        if not found:
            raise NotVisible(f"No image with UID {uid}.")
        frames.extend((instance, frame) for instance in found for frame in range(1, instance.number_of_frames + 1))
    return frames


def study_for_composing(principal: Principal, study_instance_uid: str) -> tuple[Study, list[Series]]:
    """A study of the caller's own institution and its series with images, for the compose page."""
    institution_id = _own(principal)
    study = studies_visible_to(principal).filter(institution_id=institution_id, study_instance_uid=study_instance_uid).first()
    if study is None:
        raise NotVisible()
    series = list(
        series_visible_to(principal)
        .filter(study=study, instances__rows__isnull=False)
        .distinct()
        .order_by(F("series_number").asc(nulls_last=True), "pk")
    )
    return study, series
