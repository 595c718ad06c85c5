"""Use cases that change institutions, members, credentials and devices. Each one audits itself.

Views, DRF endpoints and operator commands call these, so the same checks apply everywhere.
Input errors are django.core.exceptions.ValidationError with messages a person can act on.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import audit
from .access import Principal, hash_token, new_raw_token
from .models import ApiToken, ApplicationEntity, Device, Institution, Membership, Role, User, validate_ae_title


def _require_admin_of(actor: Principal, institution: Institution) -> None:
    """Institution admins manage their own institution; provider staff and operators manage all."""
    if actor.is_provider_staff:
        return
    actor.check_visible(institution, "pk")
    actor.require_role(Role.ADMIN)


def parse_roles(value) -> set[str]:
    """Roles from 'register,receive' or an iterable; unknown names are a ValidationError naming them."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    roles = {str(r).strip().lower() for r in items if str(r).strip()}
    unknown = sorted(roles - set(Role.values))
    if unknown:
        raise ValidationError(f"Unknown role(s): {', '.join(unknown)}. Known roles: {', '.join(Role.values)}.", code="unknown_role")
    return roles


# --- Institutions ---------------------------------------------------------------------------------


@transaction.atomic
def create_institution(*, actor: Principal, name: str, slug: str, **contact) -> tuple[Institution, bool]:
    """Create an institution, or return the existing one with that slug (updating the details given)."""
    actor.require_provider_staff()
    name = (name or "").strip()
    if not name:
        raise ValidationError("An institution needs a name.", code="name_required")
    validate_slug(slug)
    allowed = {"contact_name", "contact_email", "contact_phone", "address"}
    contact = {k: v for k, v in contact.items() if k in allowed and v is not None}
    if contact.get("contact_email"):
        validate_email(contact["contact_email"])
    institution, created = Institution.objects.select_for_update().get_or_create(slug=slug, defaults={"name": name, **contact})
    if not created:
        changed = {k: v for k, v in {"name": name, **contact}.items() if getattr(institution, k) != v}
        if changed:
            for k, v in changed.items():
                setattr(institution, k, v)
            institution.save(update_fields=list(changed))
            audit.record(action="institution.update", principal=actor, institution=institution, obj=institution, changed=sorted(changed))
        return institution, False
    audit.record(action="institution.create", principal=actor, institution=institution, obj=institution)
    return institution, True


@transaction.atomic
def set_institution_status(*, actor: Principal, institution: Institution, status: str) -> Institution:
    actor.require_provider_staff()
    if status not in Institution.Status.values:
        raise ValidationError(f"Unknown status {status!r}; use one of {', '.join(Institution.Status.values)}.")
    if institution.status != status:
        institution.status = status
        institution.save(update_fields=["status"])
        audit.record(action=f"institution.{status}", principal=actor, institution=institution, obj=institution)
    return institution


# --- Members ---------------------------------------------------------------------------------------


def generate_password() -> str:
    return secrets.token_urlsafe(12)


@transaction.atomic
def add_member(
    *,
    actor: Principal,
    institution: Institution,
    username: str,
    roles,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    password: str | None = None,
) -> tuple[Membership, str | None]:
    """Add a user (new or existing) to an institution with roles, or set the roles of an existing member.

    Returns the membership and, when a new user was created without a password, the generated
    password (to be shown once).
    """
    _require_admin_of(actor, institution)
    roles = parse_roles(roles)
    username = (username or "").strip()
    if not username:
        raise ValidationError("A user needs a username.", code="username_required")
    User.username_validator(username)
    if email:
        validate_email(email)
    user = User.objects.filter(username=username).first()
    generated = None
    if user is None:
        if password is None:
            password = generated = generate_password()
        user = User(username=username, email=email, first_name=first_name, last_name=last_name)
        validate_password(password, user)
        user.set_password(password)
        user.save()
        audit.record(action="user.create", principal=actor, institution=institution, obj=user)
    else:
        if password is not None:
            raise ValidationError(f"User {username!r} already exists; their password is theirs to change.", code="user_exists")
        if not actor.is_provider_staff and not Membership.objects.filter(user=user, institution=institution).exists():
            # Usernames are global: an institution admin may not pull in a person of another institution.
            raise ValidationError(f"The username {username!r} is taken; choose another.", code="username_taken")
    membership, created = Membership.objects.get_or_create(user=user, institution=institution)
    before = membership.roles if not created else frozenset()
    membership.set_roles(roles)
    membership.is_active = True
    membership.save()
    if created or before != membership.roles:
        audit.record(
            action="membership.create" if created else "membership.roles",
            principal=actor,
            institution=institution,
            obj=membership,
            roles=sorted(membership.roles),
        )
    return membership, generated


@transaction.atomic
def set_member_roles(*, actor: Principal, membership: Membership, roles, is_active: bool = True) -> Membership:
    _require_admin_of(actor, membership.institution)
    roles = parse_roles(roles)
    if actor.membership is not None and actor.membership.pk == membership.pk and Role.ADMIN not in roles:
        raise ValidationError("You cannot remove your own admin role; ask another admin.", code="own_admin_role")
    if actor.membership is not None and actor.membership.pk == membership.pk and not is_active:
        raise ValidationError("You cannot deactivate your own membership.", code="own_membership")
    membership.set_roles(roles)
    membership.is_active = is_active
    membership.save()
    audit.record(
        action="membership.update",
        principal=actor,
        institution=membership.institution,
        obj=membership,
        roles=sorted(roles),
        is_active=is_active,
    )
    return membership


# --- API tokens ------------------------------------------------------------------------------------


def _expiry(expires_at: datetime | None, days: int | None) -> datetime:
    now = timezone.now()
    if expires_at is None:
        expires_at = now + timedelta(days=days if days is not None else settings.API_TOKEN_DEFAULT_DAYS)
    if timezone.is_naive(expires_at):
        raise ValidationError("The expiry must carry a time zone.")
    if expires_at <= now:
        raise ValidationError("The expiry must be in the future.", code="expiry_past")
    if expires_at > now + timedelta(days=settings.API_TOKEN_MAX_DAYS):
        raise ValidationError(f"A token lives at most {settings.API_TOKEN_MAX_DAYS} days.", code="expiry_too_far")
    return expires_at


@transaction.atomic
def issue_token(
    *,
    actor: Principal,
    name: str,
    membership: Membership | None = None,
    device: Device | None = None,
    expires_at: datetime | None = None,
    days: int | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for a membership (its user's roles) or a device. The raw token is returned once, never stored."""
    if (membership is None) == (device is None):
        raise ValueError("A token belongs to exactly one membership or one device.")
    institution = membership.institution if membership else device.institution
    own = (
        membership is not None and actor.user is not None and membership.user_id == actor.user.pk and actor.institution_id == institution.pk
    )
    if not own:
        _require_admin_of(actor, institution)
    if membership is not None and not membership.is_active:
        raise ValidationError("That membership is not active.", code="membership_inactive")
    if not institution.is_active:
        raise ValidationError("The institution is suspended; no token can be issued.", code="institution_suspended")
    name = (name or "").strip()
    if not name:
        raise ValidationError("Give the token a name that says what it is for.", code="name_required")
    raw, prefix = new_raw_token()
    token = ApiToken.objects.create(
        membership=membership,
        device=device,
        institution=institution,
        name=name[:100],
        prefix=prefix,
        token_hash=hash_token(raw),
        expires_at=_expiry(expires_at, days),
        created_by=actor.user,
    )
    audit.record(action="token.create", principal=actor, institution=institution, obj=token, expires_at=token.expires_at.isoformat())
    return token, raw


@transaction.atomic
def revoke_token(*, actor: Principal, token: ApiToken) -> ApiToken:
    """Revoke a token at once; revoking twice is harmless."""
    own = token.membership_id is not None and actor.user is not None and token.membership.user_id == actor.user.pk
    if not own:
        _require_admin_of(actor, token.institution)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record(action="token.revoke", principal=actor, institution=token.institution, obj=token)
    return token


# --- DICOM AE titles -------------------------------------------------------------------------------


@transaction.atomic
def register_ae(
    *,
    actor: Principal,
    institution: Institution,
    ae_title: str,
    host: str,
    port: int = 104,
    can_send: bool = True,
    can_receive: bool = False,
    description: str = "",
    activate: bool = True,
) -> tuple[ApplicationEntity, bool]:
    """Register (or update) the AE title an institution's DICOM node uses from host.

    activate=False updates an existing registration's settings without re-activating it (the edit page).
    """
    _require_admin_of(actor, institution)
    validate_ae_title(ae_title)
    host = (host or "").strip()
    if not host or len(host) > 255 or any(c.isspace() or c in "/\\@" for c in host):
        raise ValidationError("Give the peer's host name or IP address.", code="host_invalid")
    if not 1 <= int(port) <= 65535:
        raise ValidationError("The port must be between 1 and 65535.", code="port_invalid")
    if not (can_send or can_receive):
        raise ValidationError("An AE title must be allowed to send, receive, or both.", code="no_direction")
    existing = ApplicationEntity.objects.select_for_update().filter(ae_title=ae_title, host=host).first()
    if existing is not None and existing.institution_id != institution.pk:
        raise ValidationError(f"AE title {ae_title} from {host} is already registered; choose another AE title.", code="ae_taken")
    values = {"port": int(port), "can_send": can_send, "can_receive": can_receive, "description": description}
    if activate or existing is None:
        values["is_active"] = True
    if existing is None:
        try:
            with transaction.atomic():
                ae = ApplicationEntity.objects.create(institution=institution, ae_title=ae_title, host=host, **values)
        except IntegrityError:
            raise ValidationError(f"AE title {ae_title} from {host} is already registered.", code="ae_taken") from None
        audit.record(
            action="ae.create", principal=actor, institution=institution, obj=ae, **{k: v for k, v in values.items() if k != "description"}
        )
        return ae, True
    changed = [k for k, v in values.items() if getattr(existing, k) != v]
    if changed:
        for k in changed:
            setattr(existing, k, values[k])
        existing.save(update_fields=changed)
        audit.record(action="ae.update", principal=actor, institution=institution, obj=existing, changed=changed)
    return existing, False


@transaction.atomic
def set_ae_active(*, actor: Principal, ae: ApplicationEntity, is_active: bool) -> ApplicationEntity:
    _require_admin_of(actor, ae.institution)
    if ae.is_active != is_active:
        ae.is_active = is_active
        ae.save(update_fields=["is_active"])
        audit.record(action="ae.activate" if is_active else "ae.deactivate", principal=actor, institution=ae.institution, obj=ae)
    return ae


# --- Devices ---------------------------------------------------------------------------------------


@transaction.atomic
def register_device(*, actor: Principal, institution: Institution, name: str, kind: str, description: str = "") -> tuple[Device, str]:
    """Register a device and issue its first credential (returned once)."""
    _require_admin_of(actor, institution)
    name = (name or "").strip()
    if not name:
        raise ValidationError("A device needs a name.", code="name_required")
    if kind not in Device.Kind.values:
        raise ValidationError(f"Unknown device kind {kind!r}; use one of {', '.join(Device.Kind.values)}.", code="kind_invalid")
    if Device.objects.filter(institution=institution, name=name).exists():
        raise ValidationError(f"A device named {name!r} already exists in this institution.", code="device_exists")
    device = Device.objects.create(institution=institution, name=name, kind=kind, description=description)
    audit.record(action="device.create", principal=actor, institution=institution, obj=device, kind=kind)
    _, raw = issue_token(actor=actor, device=device, name=f"{name} credential", days=settings.API_TOKEN_MAX_DAYS)
    return device, raw


@transaction.atomic
def set_device_active(*, actor: Principal, device: Device, is_active: bool) -> Device:
    _require_admin_of(actor, device.institution)
    if device.is_active != is_active:
        device.is_active = is_active
        device.save(update_fields=["is_active"])
        audit.record(
            action="device.activate" if is_active else "device.deactivate", principal=actor, institution=device.institution, obj=device
        )
    return device


# --- Provider staff --------------------------------------------------------------------------------


@transaction.atomic
def create_provider_staff(
    *,
    actor: Principal,
    username: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    password: str | None = None,
) -> tuple[User, str | None]:
    """Create a provider-staff user (is_staff), or mark an existing user as provider staff.

    Returns the user and, when a new user was created without a password, the generated
    password (to be shown once). An existing user's password is never changed here.
    """
    actor.require_provider_staff()
    username = (username or "").strip()
    if not username:
        raise ValidationError("A user needs a username.", code="username_required")
    User.username_validator(username)
    if email:
        validate_email(email)
    user = User.objects.select_for_update().filter(username=username).first()
    generated = None
    if user is None:
        if password is None:
            password = generated = generate_password()
        user = User(username=username, email=email, first_name=first_name, last_name=last_name, is_staff=True)
        validate_password(password, user)
        user.set_password(password)
        user.save()
        audit.record(action="user.create", principal=actor, obj=user)
    elif password is not None:
        raise ValidationError(f"User {username!r} already exists; their password is theirs to change.", code="user_exists")
    elif user.is_staff:
        return user, None
    else:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    audit.record(action="user.provider_staff", principal=actor, obj=user)
    return user, generated


# --- Notifications ---------------------------------------------------------------------------------


def notify(*, users, text: str, link: str = "", institution: Institution | None = None, email: bool = True) -> int:
    """Tell users something in the portal, and by e-mail when EMAIL_URL is configured and they have an address.

    The e-mail goes out after the transaction commits and never carries patient data: only the text and link.
    """
    from django.core.mail import send_mail

    from .models import Notification

    users = [u for u in users if u is not None and u.is_active]
    Notification.objects.bulk_create([Notification(user=u, institution=institution, text=text[:300], link=link[:300]) for u in users])
    recipients = [u.email for u in users if u.email]
    if email and recipients and settings.EMAIL_BACKEND != "django.core.mail.backends.console.EmailBackend":
        body = f"{text}\n\n{settings.PORTAL_BASE_URL.rstrip('/')}{link}" if link else text
        transaction.on_commit(lambda: send_mail("medarchive: " + text[:80], body, None, recipients, fail_silently=True))
    return len(users)


def mark_notifications_read(*, user: User, ids=None) -> int:
    from .models import Notification

    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        unread = unread.filter(pk__in=list(ids))
    return unread.update(read_at=timezone.now())
