"""Read queries of the archive, always scoped to the caller: one place decides which studies it may see.

Patient data is visible to members (and tokens, AE titles) of the owning institution. Provider
staff operate the service but do not browse patient data. Shares with receiving institutions
join here (the delivery work), so every way out inherits them.
"""

from __future__ import annotations

from django.db.models import QuerySet

from subscribers.access import NotVisible, Principal

from .models import Instance, Patient, Series, Study


def _institution_filter(principal: Principal) -> dict | None:
    if principal is None or principal.institution is None:
        return None
    return {"institution": principal.institution}


def studies_visible_to(principal: Principal) -> QuerySet[Study]:
    scope = _institution_filter(principal)
    if scope is None:
        return Study.objects.none()
    return Study.objects.filter(**scope).select_related("patient")


def series_visible_to(principal: Principal) -> QuerySet[Series]:
    return Series.objects.filter(study__in=studies_visible_to(principal))


def instances_visible_to(principal: Principal) -> QuerySet[Instance]:
    return Instance.objects.filter(study__in=studies_visible_to(principal))


def patients_visible_to(principal: Principal) -> QuerySet[Patient]:
    scope = _institution_filter(principal)
    return Patient.objects.filter(**scope) if scope else Patient.objects.none()


def get_study(principal: Principal, study_instance_uid: str) -> Study:
    study = studies_visible_to(principal).filter(study_instance_uid=study_instance_uid).first()
    if study is None:
        raise NotVisible()
    return study
