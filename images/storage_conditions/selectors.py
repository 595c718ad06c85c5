"""Read queries of storage conditions, scoped to the caller: an institution's admins see its own; provider staff see
the data-stored state of every institution (figures only, no patient data)."""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery

from subscribers.access import Principal
from subscribers.models import Institution, Role

from .. import selectors as archive_selectors
from ..models import LegalHold, StorageCondition, StorageSnapshot, Study


def _administers(principal: Principal) -> bool:
    return principal.institution is not None and (principal.is_provider_staff or principal.has_role(Role.ADMIN))


def conditions_of(principal: Principal) -> QuerySet[StorageCondition]:
    """The condition rows of the institution the caller administers (acting for it, also as provider staff)."""
    if not _administers(principal):
        return StorageCondition.objects.none()
    return StorageCondition.objects.filter(institution=principal.institution).select_related("updated_by")


def legal_holds_of(principal: Principal) -> QuerySet[LegalHold]:
    if not _administers(principal):
        return LegalHold.objects.none()
    return LegalHold.objects.filter(institution=principal.institution).select_related("study", "patient")


def snapshots_of(principal: Principal) -> QuerySet[StorageSnapshot]:
    if not _administers(principal):
        return StorageSnapshot.objects.none()
    return StorageSnapshot.objects.filter(institution=principal.institution)


def own_studies(principal: Principal) -> QuerySet[Study]:
    """The studies the caller's institution owns (not those shared with it), for its admins."""
    if not _administers(principal):
        return Study.objects.none()
    return archive_selectors.studies_visible_to(principal).filter(is_shared=False)


def latest_snapshots(principal: Principal) -> QuerySet[Institution]:
    """Every institution with the id of its latest finished snapshot (provider staff only)."""
    if not principal.is_provider_staff:
        return Institution.objects.none()
    latest = StorageSnapshot.objects.filter(institution=OuterRef("pk"), status=StorageSnapshot.Status.DONE).order_by("-started_at", "-id")
    return Institution.objects.annotate(latest_snapshot_id=Subquery(latest.values("pk")[:1])).order_by("name")


def snapshots_by_id(principal: Principal, ids) -> dict[int, StorageSnapshot]:
    if not principal.is_provider_staff:
        return {}
    return StorageSnapshot.objects.in_bulk([i for i in ids if i])
