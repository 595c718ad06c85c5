"""Accepting and cancelling processing jobs. Running them is software/services/runner.py (in the Celery worker).

A job is accepted only when everything a user can get wrong has been checked: the run-software role, a loaded
processing type, a usable licence (403 with the reason), parameters within the type's schema (400 naming the parameter),
images of the caller's own institution (404 otherwise), in one study, of which at least one is for this type. The
accepted job counts one use of the licence and is queued for the worker once committed.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from jsonschema import Draft202012Validator

from images.models import Instance, Series, Study
from subscribers import audit
from subscribers.access import NotVisible, Principal
from subscribers.models import ApplicationEntity, Role

from ..errors import InvalidParameters, LicenceRefused
from ..models import Delivery, ProcessingItem, ProcessingJob, Software
from ..processors import registry
from ..processors.base import Processor
from . import licences

MAX_UIDS = 10_000
logger = logging.getLogger(__name__)


def task_id_for(job_id: int) -> str:
    return f"processing-job-{job_id}"


# --- Parameters -------------------------------------------------------------------------------------------------------


def validate_parameters(processor: Processor, raw) -> dict:
    """The parameters to apply: the schema's defaults overlaid with raw, checked against the schema."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidParameters("Parameters are an object of name: value pairs.", parameter="")
    parameters = {**processor.defaults(), **raw}
    schema = processor.parameters_schema
    errors = sorted(Draft202012Validator(schema).iter_errors(parameters), key=lambda e: ([str(p) for p in e.path], e.message))
    if not errors:
        return parameters
    error = errors[0]
    known = set(schema.get("properties", {}))
    if error.validator == "additionalProperties":
        unknown = sorted(set(parameters) - known)
        name = unknown[0] if unknown else ""
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidParameters(f"Parameter {name!r} is not a parameter of {processor.name} (its parameters: {allowed}).", parameter=name)
    if error.validator == "required":
        name = str(error.message).split("'")[1] if "'" in error.message else ""
        raise InvalidParameters(f"Parameter {name!r} is required by {processor.name}.", parameter=name)
    name = str(error.path[0]) if error.path else ""
    raise InvalidParameters(f"Parameter {name!r}: {error.message}.", parameter=name)


def coerce_parameters(processor: Processor, pairs: dict[str, str]) -> dict:
    """Parameters given as text (command line, form fields) turned into the types the schema asks for.

    Values that do not convert are passed on as they are, so the schema check names them.
    """
    properties = processor.parameters_schema.get("properties", {})
    result = {}
    for name, text in pairs.items():
        spec = properties.get(name, {})
        kinds = spec.get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        text = text.strip() if isinstance(text, str) else text
        if not isinstance(text, str):
            result[name] = text
        elif text == "" and "null" in kinds:
            result[name] = None
        elif "array" in kinds:
            result[name] = [part.strip() for part in text.split(",") if part.strip()]
        elif "boolean" in kinds and text.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            result[name] = text.lower() in ("true", "yes", "on", "1")
        elif "integer" in kinds or "number" in kinds:
            try:
                value = json.loads(text)
                result[name] = value if isinstance(value, int | float) and not isinstance(value, bool) else text
            except ValueError:
                result[name] = text
        else:
            result[name] = text
    return result


# --- What a job runs on ---------------------------------------------------------------------------------------------


def resolve_selection(principal: Principal, uids: list[str]) -> tuple[str, Study, list[Instance]]:
    """(scope, study, instances) named by study, series or SOP instance UIDs of the caller's own institution.

    A UID that names nothing of the caller's institution is "not found" (NotVisible), as if it did not exist.
    """
    from .. import selectors

    uids = [u.strip() for u in uids if u and u.strip()]
    if not uids:
        raise ValidationError("Name the images to process: a study, series or SOP instance UIDs.", code="no_images")
    if len(uids) > MAX_UIDS:
        raise ValidationError(f"A job takes at most {MAX_UIDS} UIDs.", code="too_many_uids")
    visible = selectors.processable_instances(principal)
    study_uids = set(visible.filter(study__study_instance_uid__in=uids).values_list("study__study_instance_uid", flat=True))
    series_uids = set(visible.filter(series__series_instance_uid__in=uids).values_list("series__series_instance_uid", flat=True))
    instance_uids = set(visible.filter(sop_instance_uid__in=uids).values_list("sop_instance_uid", flat=True))
    unknown = [u for u in uids if u not in study_uids | series_uids | instance_uids]
    if unknown:
        raise NotVisible()
    chosen = visible.filter(
        Q(study__study_instance_uid__in=study_uids) | Q(series__series_instance_uid__in=series_uids) | Q(sop_instance_uid__in=instance_uids)
    )
    instances = list(
        chosen.select_related("series", "study").order_by(
            F("series__series_number").asc(nulls_last=True), "series_id", F("instance_number").asc(nulls_last=True), "pk"
        )
    )
    studies = {i.study_id for i in instances}
    if len(studies) != 1:
        raise ValidationError(
            f"A job works on the images of one study; these UIDs name images of {len(studies)} studies.", code="several_studies"
        )
    scope = ProcessingJob.Scope.STUDY if study_uids else ProcessingJob.Scope.SERIES if series_uids else ProcessingJob.Scope.INSTANCES
    return scope, instances[0].study, instances


def plan_items(processor: Processor, instances: list[Instance]) -> list[dict]:
    """The units of work for the processor's scope: each instance, each series, or the study."""

    def series_label(series: Series) -> str:
        number = f"Series {series.series_number}" if series.series_number is not None else "Series"
        return f"{number} {series.series_description or ''} ({series.modality or '?'})".replace("  ", " ")

    groups: OrderedDict[str, list[Instance]] = OrderedDict()
    labels = {}
    for instance in instances:
        if processor.scope == "instances":
            key = instance.sop_instance_uid
            labels[key] = (
                f"{series_label(instance.series)} image {instance.instance_number if instance.instance_number is not None else '?'}"
            )
        elif processor.scope == "series":
            key = instance.series.series_instance_uid
            labels[key] = series_label(instance.series)
        else:
            key = instance.study.study_instance_uid
            labels[key] = f"Study {instance.study.study_description or instance.study.study_instance_uid}"
        groups.setdefault(key, []).append(instance)
    items = []
    for position, (key, members) in enumerate(groups.items()):
        if processor.scope == "series":
            labels[key] += f", {len(members)} image{'s' if len(members) != 1 else ''}"
        reasons = {processor.accepts(modality=m.series.modality, sop_class_uid=m.sop_class_uid) for m in members} - {None}
        items.append(
            {
                "position": position,
                "label": labels[key][:200],
                "source_uids": [m.sop_instance_uid for m in members],
                "refusal": sorted(reasons)[0] if reasons else None,
            }
        )
    return items


# --- Submitting and cancelling --------------------------------------------------------------------------------------


def processor_for(processor_id: str) -> Processor:
    processor = registry.get(processor_id or "")
    if processor is not None:
        return processor
    broken = registry.unavailable().get(processor_id or "")
    if broken is not None:
        raise ValidationError(
            f"The processing type {processor_id!r} is unavailable on this server: {broken.reason}.", code="type_unavailable"
        )
    known = ", ".join(sorted(registry.available())) or "none"
    raise ValidationError(f"There is no processing type {processor_id!r} (available: {known}).", code="unknown_type")


def software_for(processor: Processor) -> Software:
    software = Software.objects.filter(processor_id=processor.id, kind=Software.Kind.SERVER_RUN).first()
    if software is None:
        raise LicenceRefused(
            f"{processor.name} is not offered in the software catalogue; no institution is licensed for it.", code="not_in_catalogue"
        )
    return software


def submit_job(
    *,
    principal: Principal,
    processor_id: str,
    parameters: dict | None,
    uids: list[str],
    delivery: str = Delivery.PULL,
    push_ae: ApplicationEntity | None = None,
    origin: str = ProcessingJob.Origin.PORTAL,
    address: str = "",
    queue: bool = True,
) -> ProcessingJob:
    """Accept a job (see the module docstring). queue=False leaves it for the caller to run (`process --inline`)."""
    principal.require_role(Role.SOFTWARE)
    processor = processor_for(processor_id)
    software = software_for(processor)
    try:
        licences.check_licence(principal=principal, software=software)
    except LicenceRefused as refusal:
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="processing", address=address)
        raise
    applied = validate_parameters(processor, parameters)
    scope, study, instances = resolve_selection(principal, uids)
    items = plan_items(processor, instances)
    if all(item["refusal"] for item in items):
        raise ValidationError(items[0]["refusal"] + " None of the chosen images is for this processing type.", code="nothing_to_process")
    if delivery not in Delivery.values:
        raise ValidationError(f"Delivery is one of: {', '.join(Delivery.values)}.", code="bad_delivery")
    if delivery == Delivery.PUSH:
        if push_ae is None:
            raise ValidationError("Push delivery needs a receiving AE title of your institution.", code="push_needs_ae")
        if push_ae.institution_id != principal.institution_id:
            raise NotVisible()
        if not (push_ae.can_receive and push_ae.is_active):
            raise ValidationError(f"{push_ae} is not an active AE title allowed to receive.", code="push_ae_not_receiving")
    else:
        push_ae = None
    try:
        with transaction.atomic():
            licence = licences.use_licence(principal=principal, software=software, purpose="processing")
            job = ProcessingJob.objects.create(
                institution=principal.institution,
                requested_by=principal.user if principal.user and principal.user.pk else None,
                requested_by_name=principal.label()[:200],
                origin=origin,
                software=software,
                licence=licence,
                processor_id=processor.id,
                processor_name=processor.name,
                processor_version=processor.version,
                parameters=applied,
                scope=scope,
                source_uids=list(uids)[:MAX_UIDS],
                study=study,
                progress_total=len(items),
                time_limit_seconds=settings.PROCESSING_TIME_LIMIT_SECONDS,
                memory_limit_mb=settings.PROCESSING_MEMORY_LIMIT_MB,
                delivery=delivery,
                push_ae=push_ae,
            )
            job.celery_task_id = task_id_for(job.pk)
            job.save(update_fields=["celery_task_id"])
            ProcessingItem.objects.bulk_create(
                [ProcessingItem(job=job, position=i["position"], label=i["label"], source_uids=i["source_uids"]) for i in items]
            )
            audit.record(
                action="processing.job.submit",
                principal=principal,
                obj=job,
                address=address,
                study_instance_uid=study.study_instance_uid,
                processor_id=processor.id,
                processor_version=processor.version,
                parameters=applied,
                scope=scope,
                item_count=len(items),
                delivery=delivery,
            )
            if queue:
                transaction.on_commit(lambda: enqueue(job))
    except LicenceRefused as refusal:
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="processing", address=address)
        raise
    return job


def enqueue(job: ProcessingJob) -> None:
    from ..tasks import run_processing_job

    # The job's own limit (runner.py) fires first; Celery's are the backstop of a prefork worker.
    run_processing_job.apply_async(
        args=[job.pk],
        task_id=task_id_for(job.pk),
        soft_time_limit=job.time_limit_seconds + 30,
        time_limit=job.time_limit_seconds + 90,
    )


@transaction.atomic
def cancel_job(*, principal: Principal, job: ProcessingJob, address: str = "") -> ProcessingJob:
    """Cancel a queued job at once; ask a running one to stop (the worker stops at the next step and removes its products)."""
    principal.require_role(Role.SOFTWARE)
    job = ProcessingJob.objects.select_for_update().get(pk=job.pk)
    if job.institution_id != principal.institution_id:
        raise NotVisible()
    if job.is_finished:
        raise ValidationError(f"Job {job.pk} has already finished ({job.get_status_display().lower()}).", code="finished")
    now = timezone.now()
    job.cancel_requested_at = job.cancel_requested_at or now
    if job.status == ProcessingJob.Status.QUEUED:
        job.status = ProcessingJob.Status.CANCELLED
        job.finished_at = now
        job.error = f"Cancelled by {principal.label()} before it started."
    job.save()
    audit.record(action="processing.job.cancel", principal=principal, obj=job, address=address, status=job.status)
    if job.status == ProcessingJob.Status.CANCELLED:
        transaction.on_commit(lambda: _revoke(job.celery_task_id))
    return job


def _revoke(task_id: str) -> None:
    from medarchive.celery import app

    try:
        app.control.revoke(task_id)
    except Exception as error:  # a broker without broadcast (filesystem): the worker finds the job cancelled and does nothing
        logger.info("could not revoke %s: %s", task_id, error)
