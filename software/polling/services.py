"""Polling sources and their polls: register one, turn it on or off, poll it, and start the polls that are due.

A poll asks the source for the studies matching its query and age window, skips those already processed (PolledStudy
with a job), fetches each new one into the source's institution through the one ingest service, and starts a
processing job on it with the source's processing type, parameters and delivery. Each poll is a PollRun (found,
fetched, processed, failed). A source that cannot be asked fails the run with the reason and is tried again with
backoff: next_poll_at = now + min(every_minutes x 2^failures, POLL_BACKOFF_CAP); its admins are told at the first
failure, and the portal shows the state until it recovers.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from images.errors import IngestRefused
from images.ingest.bulk import count_outcomes, ingest_tree, operator_for
from images.models import Study
from subscribers import audit
from subscribers.access import NotVisible, Principal
from subscribers.models import ApplicationEntity, AuditEvent, Institution, Membership, Role, validate_ae_title
from subscribers.services import notify

from ..errors import LicenceRefused
from ..models import Delivery, PolledStudy, PollRun, PollSource, ProcessingJob
from . import jobs
from .base import FetchFailed, FoundStudy, PollFailed
from .dicomweb import DicomwebEndpoint
from .dimse import DicomNode
from .query import MAX_AGE_DAYS, date_range, normalize_query

logger = logging.getLogger(__name__)

POLL_BACKOFF_CAP = timedelta(hours=24)
# A claimed source is not dispatched again for this long: a poll that died (worker killed) is retried after it.
CLAIM_LEASE = timedelta(minutes=30)
# New studies fetched by one poll; the rest wait for the next (a first poll of a busy PACS must not run for hours).
MAX_STUDIES_PER_POLL = 25
MAX_EVERY_MINUTES = 7 * 24 * 60
SOURCE = "poll"  # Instance.source of what a poll fetched


# --- Registering a source ----------------------------------------------------------------------------------------


def _require_admin_of(principal: Principal, institution: Institution) -> None:
    """The institution's admins manage its sources; provider staff and the operator manage all."""
    if principal.is_provider_staff:
        return
    principal.check_visible(institution, "pk")
    principal.require_role(Role.ADMIN)


def _clean_host(host: str) -> str:
    host = (host or "").strip()
    if not host or len(host) > 255 or any(c.isspace() or c in "/\\@" for c in host):
        raise ValidationError("Give the PACS's host name or IP address.", code="host_invalid")
    return host


def _clean_url(url: str) -> str:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Give the DICOMweb endpoint's address, e.g. https://pacs.example.org/dicom-web.", code="url_invalid")
    if parts.username or parts.password:
        raise ValidationError("Give the user name and secret in their own fields, not in the address.", code="url_credentials")
    if parts.query or parts.fragment:
        raise ValidationError("The DICOMweb address takes no query or fragment.", code="url_invalid")
    return url.rstrip("/")


def _check_delivery(institution: Institution, delivery: str, push_ae: ApplicationEntity | None) -> None:
    if delivery not in Delivery.values:
        raise ValidationError(f"Delivery is {' or '.join(Delivery.values)}.", code="delivery_invalid")
    if delivery == Delivery.PUSH:
        if push_ae is None:
            raise ValidationError("Push delivery needs a receiving AE title of the institution.", code="push_ae_required")
        if push_ae.institution_id != institution.pk or not push_ae.can_receive or not push_ae.is_active:
            raise ValidationError(f"AE title {push_ae.ae_title} is not an active receiver of {institution}.", code="push_ae_invalid")


@dataclass
class SourceSettings:
    """Everything a source is made of, as a form or a command gives it."""

    name: str
    kind: str
    processor_id: str
    parameters: dict
    query: dict
    max_age_days: int | None = None
    every_minutes: int = 60
    ae_title: str = ""
    host: str = ""
    port: int | None = None
    retrieve: str = PollSource.Retrieve.C_GET
    url: str = ""
    username: str = ""
    secret: str = ""
    delivery: str = Delivery.PULL
    push_ae: ApplicationEntity | None = None


def default_name(settings_: SourceSettings) -> str:
    if settings_.kind == PollSource.Kind.DICOM:
        return f"{settings_.ae_title}@{settings_.host}:{settings_.port}"[:100]
    parts = urlsplit(settings_.url)
    return f"{parts.hostname}{parts.path}"[:100]


@transaction.atomic
def add_poll_source(*, principal: Principal, institution: Institution, source: SourceSettings) -> PollSource:
    """Register a polling source of institution; a ValidationError names what is wrong and nothing is saved."""
    _require_admin_of(principal, institution)
    if not institution.is_active:
        raise ValidationError(f"{institution} is suspended.", code="institution_suspended")
    values = _clean(institution, source)
    if PollSource.objects.filter(institution=institution, name=values["name"]).exists():
        raise ValidationError(f"{institution} already has a polling source named {values['name']!r}.", code="name_taken")
    try:
        with transaction.atomic():
            created = PollSource.objects.create(institution=institution, created_by=principal.user, next_poll_at=timezone.now(), **values)
    except IntegrityError:
        raise ValidationError(f"{institution} already has a polling source named {values['name']!r}.", code="name_taken") from None
    audit.record(
        action="software.poll_source.create",
        principal=principal,
        institution=institution,
        obj=created,
        **{k: v for k, v in values.items() if k not in ("secret", "push_ae")},
        push_ae=str(created.push_ae) if created.push_ae else "",
        has_secret=bool(values["secret"]),
    )
    return created


def _clean(institution: Institution, source: SourceSettings) -> dict:
    kind = source.kind
    if kind not in PollSource.Kind.values:
        raise ValidationError("A polling source is a DICOM node or a DICOMweb endpoint.", code="kind_invalid")
    values = {
        "kind": kind,
        "ae_title": "",
        "host": "",
        "port": None,
        "retrieve": PollSource.Retrieve.C_GET,
        "url": "",
        "username": "",
        "secret": "",
    }
    if kind == PollSource.Kind.DICOM:
        validate_ae_title(source.ae_title)
        try:
            port = int(source.port)
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise ValidationError("The PACS's port is between 1 and 65535.", code="port_invalid")
        if source.retrieve not in PollSource.Retrieve.values:
            raise ValidationError("Retrieve with C-GET or C-MOVE.", code="retrieve_invalid")
        values.update(ae_title=source.ae_title, host=_clean_host(source.host), port=port, retrieve=source.retrieve)
    else:
        values.update(url=_clean_url(source.url), username=(source.username or "").strip()[:200], secret=source.secret or "")
    try:
        every = int(source.every_minutes)
    except (TypeError, ValueError):
        every = 0
    if not 1 <= every <= MAX_EVERY_MINUTES:
        raise ValidationError(f"Poll every 1 to {MAX_EVERY_MINUTES} minutes.", code="every_invalid")
    age = source.max_age_days
    if age in ("", None):
        age = None
    else:
        try:
            age = int(age)
        except (TypeError, ValueError):
            age = 0
        if not 1 <= age <= MAX_AGE_DAYS:
            raise ValidationError(f"The age window is 1 to {MAX_AGE_DAYS} days (or none).", code="age_invalid")
    processor_id, parameters = jobs.check_processing(institution, source.processor_id, source.parameters or {})
    _check_delivery(institution, source.delivery, source.push_ae)
    name = (source.name or "").strip() or default_name(source)
    if len(name) > 100:
        raise ValidationError("A name is at most 100 characters.", code="name_invalid")
    values.update(
        name=name,
        query=normalize_query(source.query),
        max_age_days=age,
        every_minutes=every,
        processor_id=processor_id,
        parameters=parameters,
        delivery=source.delivery,
        push_ae=source.push_ae if source.delivery == Delivery.PUSH else None,
    )
    return values


@transaction.atomic
def set_poll_source_active(*, principal: Principal, source: PollSource, is_active: bool) -> PollSource:
    """Turn a source off (no more polls) or on again (polled at the next dispatch, with its failures forgotten)."""
    _require_admin_of(principal, source.institution)
    source = PollSource.objects.select_for_update().get(pk=source.pk)
    if source.is_active == is_active:
        return source
    source.is_active = is_active
    fields = ["is_active"]
    if is_active:
        source.failures, source.next_poll_at = 0, timezone.now()
        fields += ["failures", "next_poll_at"]
    source.save(update_fields=fields)
    audit.record(
        action="software.poll_source.enable" if is_active else "software.poll_source.disable",
        principal=principal,
        institution=source.institution,
        obj=source,
    )
    return source


@transaction.atomic
def request_poll_now(*, principal: Principal, source: PollSource) -> PollSource:
    """Have the dispatcher poll the source at its next run (within a minute), backoff or not; never in the request."""
    _require_admin_of(principal, source.institution)
    source = PollSource.objects.select_for_update().get(pk=source.pk)
    if not source.is_active:
        raise ValidationError(f"Polling source {source.name} is off; turn it on first.", code="source_off")
    source.next_poll_at = timezone.now()
    source.save(update_fields=["next_poll_at"])
    audit.record(action="software.poll_source.poll_now", principal=principal, institution=source.institution, obj=source)
    return source


# --- Polling ------------------------------------------------------------------------------------------------------


def client_for(source: PollSource) -> DicomNode | DicomwebEndpoint:
    if source.kind == PollSource.Kind.DICOM:
        return DicomNode(ae_title=source.ae_title, host=source.host, port=source.port)
    return DicomwebEndpoint(url=source.url, username=source.username, secret=source.secret)


def backoff_delay(source: PollSource) -> timedelta:
    """How long after a failure to try again: every_minutes x 2^failures, at most POLL_BACKOFF_CAP."""
    cap_minutes = POLL_BACKOFF_CAP.total_seconds() / 60
    return timedelta(minutes=min(source.every_minutes * 2 ** min(source.failures, 32), cap_minutes))


def poll_source(*, source_id: int, now: datetime | None = None) -> PollRun | None:
    """Poll one source now; returns its PollRun, or None for a source turned off (or of a suspended institution)."""
    source = PollSource.objects.select_related("institution", "push_ae").filter(pk=source_id).first()
    if source is None or not source.is_active or not source.institution.is_active:
        return None
    started = now or timezone.now()
    # A run left "running" past the claim's lease was cut off (a worker killed mid-poll): say so, do not leave it open.
    PollRun.objects.filter(source=source, status=PollRun.Status.RUNNING, started_at__lt=started - CLAIM_LEASE).update(
        status=PollRun.Status.FAILED, finished_at=started, error="The poll was interrupted (the worker stopped) before it finished."
    )
    run = PollRun.objects.create(source=source, started_at=started)
    failure = ""
    try:
        _poll(source, run, started)
    except PollFailed as error:
        failure = error.reason
    except Exception as error:  # our own fault: the run must not stay "running", and the source is tried again
        logger.exception("poll of source %s failed", source.pk)
        failure = f"The poll failed on the server ({type(error).__name__}); the operator's log has the details."
    _finish(source, run, failure)
    return run


def _poll(source: PollSource, run: PollRun, started: datetime) -> None:
    problem = jobs.licence_problem(source)
    if problem:  # nothing is fetched that could not be processed
        raise PollFailed(f"The processing of this source cannot run: {problem}")
    client = client_for(source)
    window = date_range(source.max_age_days, timezone.localdate(started))
    found = client.find_studies(source.query, window)
    run.found = len(found)
    run.save(update_fields=["found"])
    # Skipped: studies with a job, and those the processing refused for good (processed_at without a job).
    done = set(
        PolledStudy.objects.filter(source=source, study_instance_uid__in=[s.study_instance_uid for s in found])
        .filter(Q(job__isnull=False) | Q(processed_at__isnull=False))
        .values_list("study_instance_uid", flat=True)
    )
    errors = []
    for study in [s for s in found if s.study_instance_uid not in done][:MAX_STUDIES_PER_POLL]:
        try:
            job = _collect(source, client, study)
        except FetchFailed as error:
            run.failed += 1
            run.fetched += error.final  # refused by the processing: fetched all the same
            errors.append(error.reason)
            _note_failure(source, study, error.reason, final=error.final)
        else:
            run.fetched += 1
            if job is not None:
                run.processed += 1
        run.save(update_fields=["fetched", "processed", "failed"])
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        run.error = f"{len(errors)} {'study' if len(errors) == 1 else 'studies'} failed: {errors[0]}{more}"[:2000]


def _note_failure(source: PollSource, study: FoundStudy, error: str, *, final: bool = False) -> None:
    """Keep why a study failed; a final failure (the processing refuses the study) is not tried again."""
    row, _ = PolledStudy.objects.get_or_create(source=source, study_instance_uid=study.study_instance_uid)
    row.error = error[:2000]
    if final:
        row.processed_at = timezone.now()
    row.save(update_fields=["error", "processed_at"])


def _collect(source: PollSource, client, study: FoundStudy) -> ProcessingJob | None:
    """Fetch one study into the source's institution and start its job; FetchFailed when it cannot be."""
    institution = source.institution
    uid = study.study_instance_uid
    if source.kind == PollSource.Kind.DICOM and source.retrieve == PollSource.Retrieve.C_MOVE:
        hint = (
            f"the PACS must know {settings.DICOM_AET} at this archive's DICOM address, and be registered as a sending AE "
            f"title of {institution}"
        )
        try:
            retrieved = client.move_study(uid, settings.DICOM_AET)
        except FetchFailed as failure:
            raise FetchFailed(f"{failure.reason} ({hint})") from None
        stored = Study.objects.filter(institution=institution, study_instance_uid=uid).values_list("number_of_instances", flat=True).first()
        if not stored:
            raise FetchFailed(
                f"{client.where} reported {retrieved.completed} instance(s) moved to {settings.DICOM_AET}, but none arrived ({hint})"
            )
        warning = ""
    else:
        with tempfile.TemporaryDirectory(prefix="poll-", dir=settings.FILE_UPLOAD_TEMP_DIR) as folder:
            retrieved = client.get_study(uid, Path(folder))
            if not retrieved.files:
                raise FetchFailed(f"{client.where} sent no instance of study {uid}.")
            try:
                outcomes = ingest_tree(principal=operator_for(institution), root=folder, source=SOURCE, address=_address(source))
            except IngestRefused as refusal:
                raise FetchFailed(f"The archive refused the study: {refusal.reason}") from None
        counts = count_outcomes(outcomes)
        refused = [o for o in outcomes if o.refused]
        if len(refused) == len(outcomes):
            raise FetchFailed(f"The archive refused every instance of study {uid}: {refused[0].reason}")
        warning = f"{len(refused)} of {len(outcomes)} instance(s) refused: {refused[0].reason}" if refused else ""
        logger.info("poll of %s fetched study %s: %s", source, uid, counts)
    with transaction.atomic():
        # Locked, so that two polls of one source (the schedule and an operator's poll_sources --now) start one job.
        row, _ = PolledStudy.objects.select_for_update().get_or_create(source=source, study_instance_uid=uid)
        if row.job_id is not None:
            return None
        # The refusals are caught inside the transaction so that submit_job's audit of them is kept.
        try:
            row.job = jobs.start_for_poll(source=source, study_instance_uid=uid)
        except LicenceRefused as refusal:  # the quota ran out during this poll: stop, try again later
            failure = PollFailed(f"The processing of this source cannot run: {refusal.reason}")
        except ValidationError as refusal:  # e.g. none of the study's images is for this processing type
            failure = FetchFailed(f"Not processed: {' '.join(refusal.messages)}", final=True)
        except NotVisible:
            failure = FetchFailed(f"Study {uid} is not in the archive of {source.institution}.")
        else:
            failure = None
            row.processed_at, row.error = timezone.now(), warning[:2000]
            row.save(update_fields=["job", "processed_at", "error"])
    if failure is not None:
        raise failure
    return row.job


def _address(source: PollSource) -> str:
    return source.host if source.kind == PollSource.Kind.DICOM else (urlsplit(source.url).hostname or "")


def _finish(source: PollSource, run: PollRun, failure: str) -> None:
    now = timezone.now()
    run.finished_at = now
    run.status = PollRun.Status.FAILED if failure else PollRun.Status.DONE
    if failure:
        run.error = failure[:2000]
    run.save(update_fields=["finished_at", "status", "error", "found", "fetched", "processed", "failed"])
    first_failure = False
    with transaction.atomic():
        locked = PollSource.objects.select_for_update().get(pk=source.pk)
        locked.last_polled_at = now
        if failure:
            first_failure = locked.failures == 0
            locked.failures += 1
            locked.last_error = failure[:2000]
            locked.next_poll_at = now + backoff_delay(locked)
        else:
            locked.failures, locked.last_error = 0, ""
            locked.next_poll_at = now + timedelta(minutes=locked.every_minutes)
        locked.save(update_fields=["last_polled_at", "failures", "last_error", "next_poll_at"])
        audit.record(
            action="software.poll",
            outcome=AuditEvent.Outcome.FAILURE if failure or run.failed else AuditEvent.Outcome.SUCCESS,
            institution=source.institution,
            actor=f"poller ({source.name})"[:200],
            obj=locked,
            run=run.pk,
            found=run.found,
            fetched=run.fetched,
            processed=run.processed,
            failed=run.failed,
            **({"reason": run.error} if run.error else {}),
        )
        if first_failure:
            _tell_admins(locked, failure)
    source.refresh_from_db()


def _tell_admins(source: PollSource, failure: str) -> None:
    admins = [
        m.user for m in Membership.objects.filter(institution=source.institution, is_admin=True, is_active=True).select_related("user")
    ]
    when = timezone.localtime(source.next_poll_at).strftime("%Y-%m-%d %H:%M")
    notify(
        users=admins,
        institution=source.institution,
        text=f"Polling source {source.name} failed and is retried at {when}: {failure}",
        link=f"/software/polling/{source.pk}/",
    )


# --- The dispatcher (Celery beat, every minute) --------------------------------------------------------------------


def due_sources(now: datetime):
    return (
        PollSource.objects.filter(is_active=True, institution__status=Institution.Status.ACTIVE)
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
        .order_by(F("next_poll_at").asc(nulls_first=True), "pk")
        .only("pk", "next_poll_at")
    )


def claim_due_sources(now: datetime | None = None) -> list[int]:
    """The ids of the sources due now, each claimed (its next_poll_at moved a lease ahead) so that the next minute's
    dispatch, or a second beat, does not start it again while it runs."""
    now = now or timezone.now()
    claimed = []
    for source in due_sources(now):
        unchanged = {"next_poll_at__isnull": True} if source.next_poll_at is None else {"next_poll_at": source.next_poll_at}
        taken = PollSource.objects.filter(pk=source.pk, **unchanged).update(next_poll_at=now + CLAIM_LEASE)
        if taken:
            claimed.append(source.pk)
    return claimed


def parse_assignments(pairs, *, what: str = "parameter") -> dict:
    """NAME=VALUE pairs (the command's --param and --match, the form's lines) as a dict of texts; parameters are turned
    into the types their schema asks for by check_processing."""
    result = {}
    for pair in pairs:
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"Give each {what} as NAME=VALUE, not {pair!r}.", code="assignment_invalid")
        result[key.strip()] = value.strip()
    return result
