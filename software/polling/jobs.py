"""Polling's use of the processing jobs (software/services/jobs.py): checking a source's processing when it is saved,
and submitting a job for each new study, as the source's institution with the run-software role."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from subscribers.access import Principal
from subscribers.models import Institution, Role

from ..errors import LicenceRefused
from ..models import PollSource, ProcessingJob
from ..services import jobs, licences


def poller_for(institution: Institution) -> Principal:
    """The server polling a source acts for the source's institution: it registers the fetched images and runs the
    institution's licensed software on them, and sees nothing of any other institution."""
    return Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER, Role.SOFTWARE}))


def check_processing(institution: Institution, processor_id: str, parameters: dict) -> tuple[str, dict]:
    """(processor id, parameters to apply) for a source of institution; a ValidationError names what is wrong: an unknown
    or unavailable type, a type the institution is not licensed for now, a parameter outside the type's schema."""
    processor = jobs.processor_for((processor_id or "").strip())
    try:
        software = jobs.software_for(processor)
        licences.check_licence(principal=poller_for(institution), software=software)
    except LicenceRefused as refusal:
        raise ValidationError(refusal.reason, code="unlicensed") from None
    applied = jobs.validate_parameters(processor, jobs.coerce_parameters(processor, parameters))
    return processor.id, applied


def licence_problem(source: PollSource) -> str:
    """Why the source's institution cannot run its processing now ('' when it can), checked before anything is fetched."""
    try:
        check_processing(source.institution, source.processor_id, source.parameters)
    except ValidationError as error:
        return " ".join(error.messages)
    return ""


def start_for_poll(*, source: PollSource, study_instance_uid: str) -> ProcessingJob:
    """Submit the source's processing on the whole study; the job is queued for the worker once committed."""
    job = jobs.submit_job(
        principal=poller_for(source.institution),
        processor_id=source.processor_id,
        parameters=source.parameters,
        uids=[study_instance_uid],
        delivery=source.delivery,
        push_ae=source.push_ae,
        origin=ProcessingJob.Origin.POLL,
        address=source.host if source.kind == PollSource.Kind.DICOM else "",
    )
    job.requested_by_name = f"polling source {source.name}"[:200]
    job.save(update_fields=["requested_by_name"])
    return job
