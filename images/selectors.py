"""Read queries of the archive, always scoped to the caller: one place decides which studies it may see.

A caller sees its own institution's studies, and — with the receive role — studies shared with its
institution or with its user, while the share is neither revoked nor expired. Provider staff
operate the service but do not browse patient data. Every way out (portal, DICOMweb, DIMSE,
tasks, PDFs) starts from `studies_visible_to`.
"""

from __future__ import annotations

from django.db.models import BooleanField, Case, Q, QuerySet, Value, When

from subscribers.access import NotVisible, Principal
from subscribers.models import Role

from .models import Instance, Patient, Series, Share, Study


def _received_shares(principal: Principal) -> QuerySet[Share]:
    target = Q(with_institution=principal.institution)
    if principal.user is not None and principal.kind in ("user", "token"):
        target |= Q(with_user=principal.user)
    return Share.objects.active().filter(target)


def studies_visible_to(principal: Principal) -> QuerySet[Study]:
    """Own studies plus those shared with the caller, annotated with is_shared."""
    if principal is None or principal.institution is None or principal.kind == "device":
        # Devices (print agents) read only the images of jobs sent to them, through their own selector.
        return Study.objects.none().annotate(is_shared=Value(False, output_field=BooleanField()))
    own = Q(institution=principal.institution)
    if not principal.has_role(Role.RECEIVE):
        return (
            Study.objects.filter(own).select_related("patient", "institution").annotate(is_shared=Value(False, output_field=BooleanField()))
        )
    shares = _received_shares(principal)
    shared = Q(pk__in=shares.filter(study__isnull=False).values("study_id")) | Q(
        patient_id__in=shares.filter(patient__isnull=False).values("patient_id")
    )
    return (
        Study.objects.filter(own | shared)
        .select_related("patient", "institution")
        .annotate(is_shared=Case(When(own, then=Value(False)), default=Value(True), output_field=BooleanField()))
    )


def series_visible_to(principal: Principal) -> QuerySet[Series]:
    return Series.objects.filter(study__in=studies_visible_to(principal).values("pk"))


def instances_visible_to(principal: Principal) -> QuerySet[Instance]:
    return Instance.objects.filter(study__in=studies_visible_to(principal).values("pk"))


def patients_visible_to(principal: Principal) -> QuerySet[Patient]:
    return Patient.objects.filter(pk__in=studies_visible_to(principal).values("patient_id"))


def get_study(principal: Principal, study_instance_uid: str) -> Study:
    """The study with this UID that the caller may see (own first, then shared); NotVisible otherwise."""
    study = (
        studies_visible_to(principal)
        .filter(study_instance_uid=study_instance_uid)
        .order_by("is_shared")  # the caller's own copy wins when the same UID is also shared with it
        .first()
    )
    if study is None:
        raise NotVisible()
    return study


def shares_of_study(principal: Principal, study: Study) -> QuerySet[Share]:
    """Shares the owner gave for this study (directly or through its patient); only the owner sees them."""
    if principal.institution_id != study.institution_id:
        return Share.objects.none()
    return Share.objects.filter(Q(study=study) | Q(patient_id=study.patient_id), owner_id=study.institution_id).select_related(
        "with_institution", "with_user", "created_by"
    )


def shared_by(study: Study) -> str:
    return study.institution.name
