"""Read queries of polling, scoped to the caller: an institution's admins see its sources; provider staff see all."""

from __future__ import annotations

from django.db.models import QuerySet

from subscribers.access import NotVisible, Principal
from subscribers.models import ApplicationEntity, Role

from ..models import PolledStudy, PollRun, PollSource

RECENT_RUNS = 20
RECENT_STUDIES = 20


def poll_sources_visible_to(principal: Principal) -> QuerySet[PollSource]:
    sources = PollSource.objects.select_related("institution", "push_ae")
    if principal.is_provider_staff:
        return sources
    if principal.institution is None or not principal.has_role(Role.ADMIN):
        return sources.none()
    return sources.filter(institution=principal.institution)


def get_poll_source(principal: Principal, source_id) -> PollSource:
    try:
        return poll_sources_visible_to(principal).get(pk=int(source_id))
    except (PollSource.DoesNotExist, TypeError, ValueError):
        raise NotVisible() from None


def recent_runs(source: PollSource, limit: int = RECENT_RUNS) -> list[PollRun]:
    return list(PollRun.objects.filter(source=source).order_by("-started_at", "-id")[:limit])


def recent_studies(source: PollSource, limit: int = RECENT_STUDIES) -> list[PolledStudy]:
    return list(PolledStudy.objects.filter(source=source).select_related("job").order_by("-first_seen_at", "-id")[:limit])


def receivers_of(institution) -> QuerySet[ApplicationEntity]:
    """The AE titles a source of institution may push products to."""
    return ApplicationEntity.objects.filter(institution=institution, can_receive=True, is_active=True).order_by("ae_title", "host")


def state_of(source: PollSource) -> str:
    """One word for the list: off, failing (backing off), or ok / not polled yet."""
    if not source.is_active:
        return "off"
    if source.failures:
        return "failing"
    return "ok" if source.last_polled_at else "new"
