"""Writing the audit trail: one function every app calls for every access to patient data."""

from __future__ import annotations

from .models import AuditEvent, Institution, User


def client_address(request) -> str:
    if request is None:
        return ""
    # Behind a proxy, configure it to set REMOTE_ADDR (e.g. gunicorn --forwarded-allow-ips); never trust XFF blindly.
    return request.META.get("REMOTE_ADDR", "")


def record(
    *,
    action: str,
    principal=None,
    request=None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    institution: Institution | None = None,
    user: User | None = None,
    obj=None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    address: str = "",
    actor: str = "",
    **detail,
) -> AuditEvent:
    """Append one audit event. The principal (or request.principal) supplies who and which institution."""
    if principal is None and request is not None:
        principal = getattr(request, "principal", None)
    if principal is not None:
        institution = institution or principal.institution
        user = user or principal.user
        actor = actor or principal.label()
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)[:200]
    return AuditEvent.objects.create(
        action=action,
        outcome=outcome,
        institution=institution,
        user=user if (user is not None and user.pk) else None,
        actor=(actor or (user.username if user else "anonymous"))[:200],
        principal_kind=principal.kind if principal is not None else ("user" if user else ""),
        object_type=object_type,
        object_id=str(object_id)[:128],
        object_repr=object_repr[:200],
        client_address=address or client_address(request),
        detail=detail,
    )


def record_refusal(request, *, action: str, reason: str, code: str, institution=None, **detail) -> AuditEvent:
    return record(
        action=action,
        request=request,
        outcome=AuditEvent.Outcome.DENIED,
        institution=institution,
        actor="anonymous",
        reason=reason,
        code=code,
        path=getattr(request, "path", "")[:300],
        **detail,
    )
