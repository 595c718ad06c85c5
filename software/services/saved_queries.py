"""Saved queries: a named DICOM match on the institution's own studies, and running a processing type on every study it
matches (one job per study, through jobs.submit_job, all accepted or none).

A saved query matches as QIDO-RS does at the study level (images/query.py): PatientName with wildcards, any case;
PatientID, AccessionNumber and StudyDescription exactly or with * and ?; ModalitiesInStudy; a StudyDate or a range
(20260101-20260131, 20260101-, -20260131); and an age window in days counted back from the day it is run. It only ever
matches studies the institution owns: a study merely shared with it is never processed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from images import query
from images.models import Study
from images.selectors import studies_visible_to
from subscribers import audit
from subscribers.access import NotVisible, Principal
from subscribers.models import ApplicationEntity, Role

from ..errors import LicenceRefused
from ..models import Delivery, ProcessingJob, SavedQuery
from . import jobs, licences

# The study-level keys a saved query matches on (PS3.4 C.6.2.1.2); "Modality" is accepted for ModalitiesInStudy.
MATCH_KEYS = ("PatientName", "PatientID", "AccessionNumber", "ModalitiesInStudy", "StudyDescription", "StudyDate")
ALIASES = {"Modality": "ModalitiesInStudy"}
MAX_VALUE_LENGTH = 64
MAX_AGE_DAYS = 36_500
MAX_STUDIES_PER_RUN = 500


# --- Reading ----------------------------------------------------------------------------------------------------------


def saved_queries_visible_to(principal: Principal) -> QuerySet[SavedQuery]:
    """The saved queries of the caller's institution, for its run-software users."""
    if principal.institution is None or not principal.has_role(Role.SOFTWARE):
        return SavedQuery.objects.none()
    return SavedQuery.objects.filter(institution_id=principal.institution_id).select_related("created_by")


def get_saved_query(principal: Principal, saved_query_id) -> SavedQuery:
    try:
        return saved_queries_visible_to(principal).get(pk=int(saved_query_id))
    except (SavedQuery.DoesNotExist, TypeError, ValueError):
        raise NotVisible() from None


def saved_query_by_name(principal: Principal, name: str) -> SavedQuery:
    found = saved_queries_visible_to(principal).filter(name=(name or "").strip()).first()
    if found is None:
        raise NotVisible()
    return found


def own_studies(principal: Principal) -> QuerySet[Study]:
    """The caller's institution's own studies: processing never runs on studies only shared with it."""
    if principal.institution is None:
        return Study.objects.none()
    return studies_visible_to(principal).filter(institution_id=principal.institution_id)


def matching_studies(principal: Principal, saved_query: SavedQuery, *, today: date | None = None) -> QuerySet[Study]:
    """The caller's own studies the saved query matches today, oldest first."""
    studies = query.apply(own_studies(principal), "study", saved_query.match)
    if saved_query.max_age_days:
        today = today or timezone.localdate()
        studies = studies.filter(study_date__gte=today - timedelta(days=saved_query.max_age_days))
    return studies.order_by(F("study_date").asc(nulls_first=True), "pk")


# --- Saving -----------------------------------------------------------------------------------------------------------


def normalize_match(raw: dict | None) -> dict[str, str]:
    """The match as stored: known keywords, non-empty values checked as QIDO checks them; ValidationError names the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationError("The match is an object of DICOM keyword: value pairs.", code="match_key")
    fields = query.fields_for("study")
    match = {}
    for name, value in raw.items():
        keyword = ALIASES.get(str(name).strip(), str(name).strip())
        if keyword not in MATCH_KEYS:
            raise ValidationError(f"Cannot match on {name!r}; a saved query matches on {', '.join(MATCH_KEYS)}.", code="match_key")
        text = str(value if value is not None else "").strip()
        if not text:
            continue  # universal matching: the key adds nothing
        if len(text) > MAX_VALUE_LENGTH or any(ord(c) < 32 for c in text):
            raise ValidationError(f"{keyword}: at most {MAX_VALUE_LENGTH} characters, without control characters.", code="match_value")
        try:
            query.condition(keyword, keyword, fields[keyword], text)
        except query.QueryError as error:
            raise ValidationError(f"{keyword}: {error.message}.", code="match_value") from None
        match[keyword] = text
    return match


@transaction.atomic
def save_query(*, principal: Principal, name: str, match: dict | None, max_age_days: int | None = None, address: str = "") -> SavedQuery:
    """Save a named match for the caller's institution; the name is unique within the institution."""
    principal.require_role(Role.SOFTWARE)
    if principal.institution is None:
        raise NotVisible()
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the query a name of at most 100 characters."}, code="name")
    cleaned = normalize_match(match)
    if max_age_days is not None and (
        isinstance(max_age_days, bool) or not isinstance(max_age_days, int) or not 1 <= max_age_days <= MAX_AGE_DAYS
    ):
        raise ValidationError({"max_age_days": f"The age window is a number of days from 1 to {MAX_AGE_DAYS}."}, code="max_age_days")
    if not cleaned and not max_age_days:
        # Running a type on the whole archive by accident is costly and counts a licence use per study.
        raise ValidationError("Give at least one thing to match, or an age window.", code="empty_match")
    if SavedQuery.objects.filter(institution_id=principal.institution_id, name=name).exists():
        raise ValidationError({"name": f"Your institution already has a saved query named {name!r}."}, code="duplicate_name")
    saved = SavedQuery.objects.create(
        institution=principal.institution,
        name=name,
        match=cleaned,
        max_age_days=max_age_days,
        created_by=principal.user if principal.user and principal.user.pk else None,
    )
    audit.record(
        action="processing.saved_query.save", principal=principal, obj=saved, address=address, match=cleaned, max_age_days=max_age_days
    )
    return saved


# --- Running ----------------------------------------------------------------------------------------------------------


@dataclass
class SavedQueryRun:
    """What running a saved query did: the accepted jobs, and the matched studies with nothing for the type."""

    jobs: list[ProcessingJob]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (study instance UID, reason)


def run_saved_query(
    *,
    principal: Principal,
    saved_query: SavedQuery,
    processor_id: str,
    parameters: dict | None,
    delivery: str = Delivery.PULL,
    push_ae: ApplicationEntity | None = None,
    origin: str = ProcessingJob.Origin.PORTAL,
    address: str = "",
    queue: bool = True,
    today: date | None = None,
) -> SavedQueryRun:
    """Submit one job per own study the saved query matches; all are accepted or none.

    Refusals are those of submit_job, checked once before any study: the licence (LicenceRefused, 403, also when its
    quota cannot cover every matched study), the parameters (InvalidParameters, 400). A query matching no study, or
    only studies with nothing for the type, is a ValidationError; a saved query of another institution is NotVisible.
    """
    principal.require_role(Role.SOFTWARE)
    if saved_query.institution_id != principal.institution_id:
        raise NotVisible()
    processor = jobs.processor_for(processor_id)
    software = jobs.software_for(processor)
    try:
        licence = licences.check_licence(principal=principal, software=software)
    except LicenceRefused as refusal:
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="processing", address=address)
        raise
    jobs.validate_parameters(processor, parameters)
    studies = list(
        matching_studies(principal, saved_query, today=today).values_list("study_instance_uid", flat=True)[: MAX_STUDIES_PER_RUN + 1]
    )
    if not studies:
        raise ValidationError(f"The saved query {saved_query.name!r} matches none of your institution's studies.", code="no_match")
    if len(studies) > MAX_STUDIES_PER_RUN:
        raise ValidationError(
            f"The saved query {saved_query.name!r} matches more than {MAX_STUDIES_PER_RUN} studies; narrow it.", code="too_many_studies"
        )
    if licence.usage_quota is not None and licence.usage_quota - licence.used_count < len(studies):
        refusal = LicenceRefused(
            f"The saved query matches {len(studies)} studies, one use each, but your institution's licence for {software.name} "
            f"has {licence.usage_quota - licence.used_count} use(s) left.",
            code="licence_quota_short",
        )
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="processing", address=address)
        raise refusal
    run = SavedQueryRun(jobs=[])
    try:
        with transaction.atomic():
            for study_uid in studies:
                try:
                    with transaction.atomic():
                        job = jobs.submit_job(
                            principal=principal,
                            processor_id=processor.id,
                            parameters=parameters,
                            uids=[study_uid],
                            delivery=delivery,
                            push_ae=push_ae,
                            origin=origin,
                            address=address,
                            queue=queue,
                        )
                except ValidationError as error:
                    if error.code != "nothing_to_process":
                        raise
                    run.skipped.append((study_uid, " ".join(error.messages)))
                else:
                    run.jobs.append(job)
            if not run.jobs:
                raise ValidationError(
                    f"None of the {len(studies)} studies the saved query {saved_query.name!r} matches has images for {processor.name}.",
                    code="nothing_to_process",
                )
            audit.record(
                action="processing.saved_query.run",
                principal=principal,
                obj=saved_query,
                address=address,
                processor_id=processor.id,
                job_ids=[j.pk for j in run.jobs],
                skipped=[uid for uid, _ in run.skipped],
            )
    except LicenceRefused as refusal:
        # Refused part-way (another user used the last uses meanwhile): nothing of this run is kept but the refusal.
        licences.record_refusal(principal=principal, software=software, refusal=refusal, purpose="processing", address=address)
        raise
    return run
