"""Read queries of the subscribers app, always scoped to what the caller may see."""

from __future__ import annotations

from django.db.models import QuerySet

from .access import Principal
from .models import ApiToken, ApplicationEntity, AuditEvent, Device, Institution, Membership, Role


def _scoped(queryset: QuerySet, principal: Principal, field: str = "institution") -> QuerySet:
    if principal.is_provider_staff:
        return queryset
    if principal.institution is None:
        return queryset.none()
    return queryset.filter(**{field: principal.institution})


def institutions_visible_to(principal: Principal) -> QuerySet[Institution]:
    return _scoped(Institution.objects.all(), principal, "pk")


def memberships_visible_to(principal: Principal) -> QuerySet[Membership]:
    """Members of the caller's institution, for its admins (and provider staff)."""
    if not (principal.is_provider_staff or principal.has_role(Role.ADMIN)):
        return Membership.objects.none()
    return _scoped(Membership.objects.select_related("user", "institution"), principal)


def tokens_visible_to(principal: Principal) -> QuerySet[ApiToken]:
    """Admins see every token of their institution; other members only their own."""
    qs = _scoped(ApiToken.objects.select_related("membership__user", "device", "institution"), principal)
    if principal.is_provider_staff or principal.has_role(Role.ADMIN):
        return qs
    if principal.membership is None:
        return qs.none()
    return qs.filter(membership=principal.membership)


def application_entities_visible_to(principal: Principal) -> QuerySet[ApplicationEntity]:
    return _scoped(ApplicationEntity.objects.select_related("institution"), principal)


def devices_visible_to(principal: Principal) -> QuerySet[Device]:
    return _scoped(Device.objects.select_related("institution"), principal)


def audit_events_visible_to(principal: Principal) -> QuerySet[AuditEvent]:
    """Provider staff see all events; an institution's admins see that institution's."""
    if principal.is_provider_staff:
        return AuditEvent.objects.select_related("institution")
    if not principal.has_role(Role.ADMIN):
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(institution=principal.institution).select_related("institution")


def filter_audit_events(
    queryset: QuerySet[AuditEvent], *, action: str = "", outcome: str = "", actor: str = "", since=None, until=None, institution: str = ""
):
    if action:
        queryset = queryset.filter(action__startswith=action)
    if outcome:
        queryset = queryset.filter(outcome=outcome)
    if actor:
        queryset = queryset.filter(actor__icontains=actor)
    if since:
        queryset = queryset.filter(at__gte=since)
    if until:
        queryset = queryset.filter(at__lt=until)
    if institution:
        queryset = queryset.filter(institution__slug=institution)
    return queryset
