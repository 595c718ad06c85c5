"""Sharing a study, or all studies of a patient, with a receiving institution or one user; revoking it.

Every share and revocation is audited; recipients are notified in the portal (and by e-mail).
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from subscribers import audit
from subscribers.access import NotVisible, Principal, RoleRequired
from subscribers.models import Institution, Membership, Role, User
from subscribers.services import notify

from ..models import Patient, Share, Study


def _require_may_share(principal: Principal, owner_id: int) -> None:
    """Members of the owning institution who read its studies (receive role) or administer it may share."""
    if principal.institution_id != owner_id:
        raise NotVisible()
    if not (principal.has_role(Role.ADMIN) or principal.has_role(Role.RECEIVE)):
        raise RoleRequired(Role.RECEIVE)


def _check_recipient(owner: Institution, with_institution: Institution | None, with_user: User | None) -> None:
    if (with_institution is None) == (with_user is None):
        raise ValidationError("Share with one institution or one user.", code="recipient_required")
    if with_institution is not None:
        if with_institution.pk == owner.pk:
            raise ValidationError("A study is already visible to its own institution.", code="share_with_self")
        if not with_institution.is_active:
            raise ValidationError("That institution is suspended and cannot receive studies.", code="recipient_suspended")
    if with_user is not None and not with_user.is_active:
        raise ValidationError("That user is not active.", code="recipient_inactive")


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            raise ValidationError("The expiry must carry a time zone.")
        if expires_at <= timezone.now():
            raise ValidationError("The expiry must be in the future.", code="expiry_past")


def _recipients(share: Share) -> list[User]:
    if share.with_user_id:
        return [share.with_user]
    return [
        m.user
        for m in Membership.objects.filter(institution=share.with_institution, is_active=True, can_receive=True).select_related("user")
    ]


@transaction.atomic
def share(
    *,
    principal: Principal,
    study: Study | None = None,
    patient: Patient | None = None,
    with_institution: Institution | None = None,
    with_user: User | None = None,
    expires_at: datetime | None = None,
    note: str = "",
) -> Share:
    """Share one study or all studies of one patient. Only the owning institution's members may share."""
    target = study if study is not None else patient
    if target is None or (study is not None and patient is not None):
        raise ValidationError("Share one study or one patient.", code="target_required")
    _require_may_share(principal, target.institution_id)
    owner = principal.institution
    _check_recipient(owner, with_institution, with_user)
    _check_expiry(expires_at)
    existing = Share.objects.active().filter(study=study, patient=patient, with_institution=with_institution, with_user=with_user).first()
    if existing is not None:
        if existing.expires_at != expires_at:
            existing.expires_at = expires_at
            existing.save(update_fields=["expires_at"])
            audit.record(
                action="share.extend", principal=principal, obj=existing, expires_at=expires_at.isoformat() if expires_at else None
            )
        return existing
    created = Share.objects.create(
        owner=owner,
        study=study,
        patient=patient,
        with_institution=with_institution,
        with_user=with_user,
        expires_at=expires_at,
        note=note[:200],
        created_by=principal.user,
    )
    audit.record(
        action="share.create",
        principal=principal,
        obj=created,
        object_type="images.study" if study else "images.patient",
        object_id=study.study_instance_uid if study else patient.patient_id,
        recipient=str(created.recipient),
        expires_at=expires_at.isoformat() if expires_at else None,
    )
    what = f"the study {study.study_description or study.study_instance_uid}" if study else "all studies of a patient"
    link = "/studies/?shared=1"
    notify(users=_recipients(created), text=f"{owner.name} shared {what} with you.", link=link, institution=with_institution)
    return created


@transaction.atomic
def revoke(*, principal: Principal, share: Share) -> Share:
    """Revoke a share at once; the recipient stops seeing the studies everywhere."""
    _require_may_share(principal, share.owner_id)
    if share.revoked_at is None:
        share.revoked_at = timezone.now()
        share.revoked_by = principal.user
        share.save(update_fields=["revoked_at", "revoked_by"])
        audit.record(action="share.revoke", principal=principal, obj=share, recipient=str(share.recipient))
    return share
