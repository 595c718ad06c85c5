"""The one access gate: who is calling (session user, API token, DICOM AE title, device) and what it may do.

Every way in (portal views, DRF/DICOMweb, the DICOM listener, tasks, PDF renderers) builds a
`Principal` here and asks it; scoped selectors in each app take that principal. Objects of an
institution the principal may not see are "not found" (`NotVisible`), never "forbidden".
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import Http404
from django.utils import timezone

from .models import ApiToken, ApplicationEntity, Device, Institution, Membership, Role, User

SESSION_INSTITUTION_KEY = "active_institution_id"
TOKEN_PREFIX = "mda"


class NotVisible(Http404):
    """The object does not exist for this caller (it may exist for someone else: never say so)."""


class AuthenticationFailed(Exception):
    """A credential was presented and refused; `reason` is safe to show to the caller."""

    def __init__(self, reason: str, *, code: str, institution: Institution | None = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.institution = institution


class RoleRequired(PermissionDenied):
    """The caller is known but lacks a role in its own institution (403, its own missing right)."""

    def __init__(self, role: str):
        self.role = Role(role)
        super().__init__(f"This needs the '{self.role.label}' role in your institution.")


@dataclass(frozen=True)
class Principal:
    """Someone or something acting on the archive, always for at most one institution at a time."""

    kind: str  # "user", "token", "ae", "device", "operator", "anonymous"
    user: User | None = None
    institution: Institution | None = None
    membership: Membership | None = None
    token: ApiToken | None = None
    device: Device | None = None
    application_entity: ApplicationEntity | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    is_provider_staff: bool = False

    @property
    def is_authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def institution_id(self) -> int | None:
        return self.institution.pk if self.institution else None

    def has_role(self, role: str) -> bool:
        return Role(role) in self.roles

    def require_role(self, role: str) -> None:
        if not self.has_role(role):
            raise RoleRequired(role)

    def require_provider_staff(self) -> None:
        if not self.is_provider_staff:
            raise PermissionDenied("This is for provider staff.")

    def can_see_institution(self, institution_id: int | None) -> bool:
        """Own institution only; provider staff see every institution's operational data."""
        return self.is_provider_staff or (institution_id is not None and institution_id == self.institution_id)

    def check_visible(self, obj, institution_attr: str = "institution_id"):
        """Return obj if its owning institution is visible to this principal, else raise NotVisible."""
        if obj is None or not self.can_see_institution(getattr(obj, institution_attr, None)):
            raise NotVisible()
        return obj

    def label(self) -> str:
        if self.kind in ("user", "token") and self.user:
            suffix = f" (token {self.token.prefix})" if self.token else ""
            return f"{self.user.username}{suffix}"
        if self.kind == "device" and self.device:
            return f"device {self.device.name}"
        if self.kind == "ae" and self.application_entity:
            return f"AE {self.application_entity.ae_title}@{self.application_entity.host}"
        if self.kind == "operator":
            return "operator (command line)"
        return "anonymous"


ANONYMOUS = Principal(kind="anonymous")
# manage.py commands run by the service operator on the server: provider-level rights.
OPERATOR = Principal(kind="operator", is_provider_staff=True)


# --- Users and their active institution ------------------------------------------------------


def active_memberships(user: User):
    """Memberships a user may act through: active membership of an active institution."""
    return (
        Membership.objects.filter(user=user, is_active=True, institution__status=Institution.Status.ACTIVE)
        .select_related("institution")
        .order_by("institution__name")
    )


def user_may_log_in(user: User) -> bool:
    """A user with no active institution (all suspended or none) can log in to nothing, unless provider staff."""
    return user.is_active and (user.is_provider_staff or active_memberships(user).exists())


def principal_for_user(user: User, institution_id: int | None) -> Principal:
    """The principal of a logged-in user acting for institution_id (or the first one they belong to)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return ANONYMOUS
    memberships = list(active_memberships(user))
    membership = next((m for m in memberships if m.institution_id == institution_id), None)
    if membership is None and memberships:
        membership = memberships[0]
    return Principal(
        kind="user",
        user=user,
        institution=membership.institution if membership else None,
        membership=membership,
        roles=membership.roles if membership else frozenset(),
        is_provider_staff=user.is_provider_staff,
    )


def principal_from_session(request) -> Principal:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ANONYMOUS
    return principal_for_user(user, request.session.get(SESSION_INSTITUTION_KEY))


def switch_institution(request, institution_id) -> Principal:
    """Make institution_id the active one for this session; a forged id (not a membership) is NotVisible."""
    try:
        institution_id = int(institution_id)
    except (TypeError, ValueError):
        raise NotVisible() from None
    if not active_memberships(request.user).filter(institution_id=institution_id).exists():
        raise NotVisible()
    request.session[SESSION_INSTITUTION_KEY] = institution_id
    return principal_for_user(request.user, institution_id)


# --- API tokens -----------------------------------------------------------------------------


def hash_token(raw: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; no salt is needed against guessing.
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_raw_token() -> tuple[str, str]:
    """Return (raw token, prefix). The prefix is public and shown in lists."""
    prefix = secrets.token_hex(4)
    return f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def principal_for_token(raw: str) -> Principal:
    """Authenticate a bearer token; raise AuthenticationFailed with a reason the caller may read."""
    raw = (raw or "").strip()
    if not raw.startswith(f"{TOKEN_PREFIX}_") or len(raw) > 200:
        raise AuthenticationFailed("Unknown API token.", code="token_unknown")
    try:
        token = ApiToken.objects.select_related("institution", "membership__user", "membership__institution", "device").get(
            token_hash=hash_token(raw)
        )
    except ApiToken.DoesNotExist:
        raise AuthenticationFailed("Unknown API token.", code="token_unknown") from None
    now = timezone.now()
    institution = token.institution
    if token.revoked_at:
        raise AuthenticationFailed("This API token has been revoked.", code="token_revoked", institution=institution)
    if token.expires_at <= now:
        raise AuthenticationFailed("This API token has expired.", code="token_expired", institution=institution)
    if not institution.is_active:
        raise AuthenticationFailed("The institution of this token is suspended.", code="institution_suspended", institution=institution)
    if token.membership_id:
        membership = token.membership
        if not membership.is_active or not membership.user.is_active:
            raise AuthenticationFailed("The user of this token is no longer active.", code="membership_inactive", institution=institution)
        principal = Principal(
            kind="token",
            user=membership.user,
            institution=institution,
            membership=membership,
            token=token,
            roles=membership.roles,
            is_provider_staff=False,  # a token acts for its institution only, never with operator rights
        )
    else:
        if not token.device.is_active:
            raise AuthenticationFailed("This device has been deactivated.", code="device_inactive", institution=institution)
        principal = Principal(kind="device", institution=institution, device=token.device, token=token)
    if token.last_used_at is None or now - token.last_used_at > settings.API_TOKEN_LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return principal


def token_from_authorization_header(header: str) -> str | None:
    """Bearer (RFC 6750) or DRF-style 'Token' scheme; None when no token was presented."""
    parts = (header or "").split()
    if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
        return parts[1]
    return None


# --- DICOM application entities --------------------------------------------------------------


def _addresses_of(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(ipaddress.ip_address(info[4][0])) for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, ValueError):
        return set()


def principal_for_ae(calling_ae_title: str, peer_address: str) -> Principal:
    """The institution behind a DICOM association, from its calling AE title and the address it came from."""
    title = (calling_ae_title or "").strip()
    try:
        peer = str(ipaddress.ip_address(peer_address))
    except ValueError:
        raise AuthenticationFailed("The peer address is not an IP address.", code="ae_bad_peer") from None
    candidates = ApplicationEntity.objects.filter(ae_title=title).select_related("institution")
    if not candidates:
        raise AuthenticationFailed(f"Calling AE title {title!r} is not registered.", code="ae_unknown")
    for ae in candidates:
        if peer in _addresses_of(ae.host):
            if not ae.is_active:
                raise AuthenticationFailed(f"AE title {title!r} has been deactivated.", code="ae_inactive", institution=ae.institution)
            if not ae.institution.is_active:
                raise AuthenticationFailed(
                    "The institution of this AE title is suspended.", code="institution_suspended", institution=ae.institution
                )
            return Principal(kind="ae", institution=ae.institution, application_entity=ae, roles=_ae_roles(ae))
    raise AuthenticationFailed(
        f"AE title {title!r} is not allowed from {peer}.", code="ae_wrong_host", institution=candidates[0].institution
    )


def _ae_roles(ae: ApplicationEntity) -> frozenset[str]:
    roles = set()
    if ae.can_send:
        roles.add(Role.REGISTER)
    if ae.can_receive:
        roles.add(Role.RECEIVE)
    return frozenset(roles)


# --- Scoped lookups of the subscribers app's own objects -------------------------------------------


def get_visible(queryset, principal: Principal, institution_field: str = "institution", **lookup):
    """One object of queryset matching lookup, if principal may see its institution; NotVisible otherwise."""
    if not principal.is_provider_staff:
        if principal.institution is None:
            raise NotVisible()
        queryset = queryset.filter(**{institution_field: principal.institution})
    try:
        return queryset.get(**lookup)
    except (ObjectDoesNotExist, ValueError, TypeError):
        raise NotVisible() from None
