"""Licences: granting them (provider staff, idempotent), deciding whether one may be used now, counting its use, and the
requests run-software users make for software their institution lacks."""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from subscribers import audit
from subscribers.access import Principal
from subscribers.models import Institution, Role, User
from subscribers.services import notify

from ..errors import LicenceRefused
from ..models import Licence, LicenceRequest, LicenceSeat, Software


def refusal_reason(
    licence: Licence | None, software: Software, *, today: date | None = None, user: User | None = None
) -> tuple[str, str] | None:
    """Why the licence cannot be used now, as (reason for people, code); None when it can."""
    today = today or timezone.localdate()
    if not software.is_active:
        return f"{software.name} has been withdrawn from the catalogue.", "software_withdrawn"
    if licence is None:
        return f"Your institution has no licence for {software.name}; request one from the software catalogue.", "unlicensed"
    if licence.revoked_at:
        return f"Your institution's licence for {software.name} was revoked on {licence.revoked_at:%Y-%m-%d}.", "licence_revoked"
    if licence.valid_from > today:
        return f"Your institution's licence for {software.name} starts on {licence.valid_from:%Y-%m-%d}.", "licence_not_yet_valid"
    if licence.valid_until is not None and licence.valid_until < today:
        return f"Your institution's licence for {software.name} expired on {licence.valid_until:%Y-%m-%d}.", "licence_expired"
    if licence.usage_quota is not None and licence.used_count >= licence.usage_quota:
        return (
            f"Your institution's licence for {software.name} is exhausted: all {licence.usage_quota} uses have been used.",
            "licence_exhausted",
        )
    if licence.seats is not None and user is not None:
        holders = set(licence.seat_holders.values_list("user_id", flat=True))
        if user.pk not in holders and len(holders) >= licence.seats:
            return f"All {licence.seats} seats of your institution's licence for {software.name} are taken.", "licence_no_seat"
    return None


def licence_of(institution: Institution, software: Software) -> Licence | None:
    return Licence.objects.filter(institution=institution, software=software).first()


def check_licence(*, principal: Principal, software: Software, today: date | None = None) -> Licence:
    """The licence principal's institution may use for software now; LicenceRefused (403) with the reason otherwise."""
    licence = licence_of(principal.institution, software) if principal.institution else None
    refusal = refusal_reason(licence, software, today=today, user=principal.user)
    if refusal:
        raise LicenceRefused(refusal[0], code=refusal[1])
    return licence


@transaction.atomic
def use_licence(*, principal: Principal, software: Software, purpose: str, today: date | None = None) -> Licence:
    """Check and count one use (a job accepted, an artifact downloaded), under a row lock so a quota is never overrun."""
    licence = Licence.objects.select_for_update().filter(institution=principal.institution, software=software).first()
    refusal = refusal_reason(licence, software, today=today, user=principal.user)
    if refusal:
        raise LicenceRefused(refusal[0], code=refusal[1])
    Licence.objects.filter(pk=licence.pk).update(used_count=licence.used_count + 1)
    licence.used_count += 1
    if principal.user is not None and principal.user.pk:
        LicenceSeat.objects.get_or_create(licence=licence, user=principal.user)
    return licence


def record_refusal(*, principal: Principal, software: Software, refusal: LicenceRefused, purpose: str, address: str = "") -> None:
    audit.record(
        action="licence.refused",
        principal=principal,
        outcome="denied",
        object_type="software.software",
        object_id=str(software.pk),
        object_repr=str(software)[:200],
        address=address,
        reason=refusal.reason,
        code=refusal.code,
        purpose=purpose,
    )


@transaction.atomic
def grant_licence(
    *,
    actor: Principal,
    institution: Institution,
    software: Software,
    valid_from: date | None = None,
    valid_until: date | None = None,
    usage_quota: int | None = None,
    seats: int | None = None,
) -> tuple[Licence, bool]:
    """Grant (or update to these terms) the institution's licence for software; granting the same terms twice changes nothing."""
    actor.require_provider_staff()
    valid_from = valid_from or timezone.localdate()
    if valid_until is not None and valid_until < valid_from:
        raise ValidationError({"valid_until": f"A licence cannot end ({valid_until}) before it starts ({valid_from})."})
    for name, value in (("usage_quota", usage_quota), ("seats", seats)):
        if value is not None and value < 1:
            raise ValidationError({name: "Give a positive number, or nothing for no limit."})
    terms = {"valid_until": valid_until, "usage_quota": usage_quota, "seats": seats, "revoked_at": None}
    licence = Licence.objects.select_for_update().filter(institution=institution, software=software).first()
    if licence is None:
        licence = Licence.objects.create(
            institution=institution, software=software, valid_from=valid_from, granted_by=actor.user if actor.user else None, **terms
        )
        audit.record(action="licence.grant", principal=actor, institution=institution, obj=licence, **_terms_detail(licence))
        _settle_requests(actor, licence)
        return licence, True
    # valid_from stays as first granted unless asked otherwise: re-running the same command is a no-op.
    changed = {k: v for k, v in terms.items() if getattr(licence, k) != v}
    if valid_from != licence.valid_from and valid_from < licence.valid_from:
        changed["valid_from"] = valid_from
    if changed:
        for key, value in changed.items():
            setattr(licence, key, value)
        licence.save()
        audit.record(
            action="licence.update",
            principal=actor,
            institution=institution,
            obj=licence,
            changed=sorted(changed),
            **_terms_detail(licence),
        )
    _settle_requests(actor, licence)
    return licence, False


@transaction.atomic
def revoke_licence(*, actor: Principal, licence: Licence) -> Licence:
    actor.require_provider_staff()
    if licence.revoked_at is None:
        licence.revoked_at = timezone.now()
        licence.save(update_fields=["revoked_at", "updated_at"])
        audit.record(action="licence.revoke", principal=actor, institution=licence.institution, obj=licence)
    return licence


def _terms_detail(licence: Licence) -> dict:
    return {
        "software": licence.software.name,
        "valid_from": licence.valid_from.isoformat(),
        "valid_until": licence.valid_until.isoformat() if licence.valid_until else None,
        "usage_quota": licence.usage_quota,
        "seats": licence.seats,
    }


def _settle_requests(actor: Principal, licence: Licence) -> None:
    """Pending requests for this software by this institution are granted by the grant; their askers are told."""
    pending = list(
        LicenceRequest.objects.select_for_update(of=("self",))
        .filter(institution=licence.institution, software=licence.software, status=LicenceRequest.Status.PENDING)
        .select_related("requested_by")
    )
    for request in pending:
        request.status = LicenceRequest.Status.GRANTED
        request.decided_at = timezone.now()
        request.decided_by = actor.user if actor.user else None
        request.save(update_fields=["status", "decided_at", "decided_by"])
    users = [r.requested_by for r in pending]
    if users:
        notify(
            users=users,
            institution=licence.institution,
            text=f"Your institution now has a licence for {licence.software.name}.",
            link="/software/",
        )


@transaction.atomic
def request_licence(*, principal: Principal, software: Software, message: str = "") -> tuple[LicenceRequest, bool]:
    """A run-software user asks for a licence; asking again while one is pending returns that one."""
    principal.require_role(Role.SOFTWARE)
    if not software.is_active:
        raise ValidationError(f"{software.name} has been withdrawn from the catalogue.", code="software_withdrawn")
    licence = licence_of(principal.institution, software)
    if licence is not None and refusal_reason(licence, software) is None:
        raise ValidationError(f"Your institution already has a valid licence for {software.name}.", code="already_licensed")
    existing = LicenceRequest.objects.filter(
        institution=principal.institution, software=software, status=LicenceRequest.Status.PENDING
    ).first()
    if existing is not None:
        return existing, False
    created = LicenceRequest.objects.create(
        institution=principal.institution, software=software, requested_by=principal.user, message=(message or "").strip()[:2000]
    )
    audit.record(action="licence.request", principal=principal, obj=created, software=software.name)
    staff = User.objects.filter(is_staff=True, is_active=True)
    notify(users=list(staff), text=f"{principal.institution} asks for a licence for {software.name}.", link="/software/requests/")
    return created, True


@transaction.atomic
def refuse_request(*, actor: Principal, request: LicenceRequest, note: str = "") -> LicenceRequest:
    actor.require_provider_staff()
    request = LicenceRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != LicenceRequest.Status.PENDING:
        raise ValidationError("This request has already been decided.", code="decided")
    request.status = LicenceRequest.Status.REFUSED
    request.decided_at = timezone.now()
    request.decided_by = actor.user if actor.user else None
    request.decision_note = (note or "").strip()[:300]
    request.save()
    audit.record(action="licence.request.refuse", principal=actor, institution=request.institution, obj=request, note=request.decision_note)
    if request.requested_by:
        notify(
            users=[request.requested_by],
            institution=request.institution,
            text=f"Your request for {request.software.name} was refused{': ' + request.decision_note if request.decision_note else ''}.",
            link="/software/",
        )
    return request
