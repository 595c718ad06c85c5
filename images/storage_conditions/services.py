"""Use cases of storage conditions: designate them, place and lift legal holds, delete a study. Each one audits itself.

`delete_study` is the one place a study leaves the archive: the enforcement run and an admin both come here, and it
refuses a study under a legal hold, and one whose immutable retention has not ended. Input errors are ValidationErrors
with messages a person can act on; nothing changes when one is raised.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError, Sum
from django.utils import timezone

from subscribers import audit
from subscribers.access import NotVisible, Principal
from subscribers.models import Institution, Role

from ..models import Instance, LegalHold, Patient, Series, StorageCondition, Study
from ..storage import delete_quietly
from .policy import ConditionSet, is_held, weakening

MODALITY_RE = re.compile(r"^[A-Z0-9_ ]{1,16}$")  # PS3.5 6.2: Code String
logger = logging.getLogger(__name__)
CONDITION_FIELDS = ("retention_years", "retention_from", "at_retention_end", "compression", "immutable", "required_backup_copies")


class DeletionRefused(ValidationError):
    """The study may not be deleted now (held, or immutable before its retention ends); the message says why."""


def _require_admin_of(principal: Principal, institution_id: int) -> None:
    """Institution admins act on their own institution; provider staff and the operator on any."""
    if principal.is_provider_staff:
        return
    if principal.institution_id != institution_id:
        raise NotVisible()
    principal.require_role(Role.ADMIN)


def _user(principal: Principal):
    return principal.user if principal.user is not None and principal.user.pk else None


# --- Conditions ---------------------------------------------------------------------------------------------------------


def _clean_values(values: dict) -> dict:
    """The condition values, checked; a ValidationError keyed by field names what is wrong."""
    errors = {}
    cleaned = {}
    years = values.get("retention_years")
    if years in ("", None):
        cleaned["retention_years"] = None
    elif isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= StorageCondition.MAX_RETENTION_YEARS:
        errors["retention_years"] = (
            f"A retention period is a whole number of years from 1 to {StorageCondition.MAX_RETENTION_YEARS}, or empty for no limit."
        )
    else:
        cleaned["retention_years"] = years
    for name, choices in (
        ("retention_from", StorageCondition.RetentionFrom),
        ("at_retention_end", StorageCondition.AtRetentionEnd),
        ("compression", StorageCondition.Compression),
    ):
        value = values.get(name, "")
        if value not in choices.values:
            errors[name] = f"Choose one of: {', '.join(str(label) for label in choices.labels)}."
        cleaned[name] = value
    copies = values.get("required_backup_copies", 0)
    if isinstance(copies, bool) or not isinstance(copies, int) or not 0 <= copies <= StorageCondition.MAX_BACKUP_COPIES:
        errors["required_backup_copies"] = f"The number of backup copies is a whole number from 0 to {StorageCondition.MAX_BACKUP_COPIES}."
    cleaned["required_backup_copies"] = copies
    cleaned["immutable"] = bool(values.get("immutable", False))
    if errors:
        raise ValidationError(errors)
    return cleaned


def normalize_modality(modality: str) -> str:
    modality = (modality or "").strip().upper()
    if modality and not MODALITY_RE.match(modality):
        raise ValidationError({"modality": "A modality is 1 to 16 capital letters, digits, spaces or underscores, such as CT or MR."})
    return modality


@transaction.atomic
def save_storage_condition(
    *, principal: Principal, institution: Institution, modality: str = "", adding: bool = False, **values
) -> StorageCondition:
    """Create or change the institution default (modality "") or a per-modality row; applies from the next run.

    An immutable condition can only be made stricter: never mutable again, never a shorter retention.
    """
    _require_admin_of(principal, institution.pk)
    modality = normalize_modality(modality)
    cleaned = _clean_values(values)
    Institution.objects.select_for_update().filter(pk=institution.pk).first()  # one change of an institution's conditions at a time
    conditions = ConditionSet.of(institution.pk)
    current = StorageCondition.objects.filter(institution=institution, modality=modality).first()
    if adding and current is not None:
        raise ValidationError({"modality": f"There are conditions for {modality or 'the default'} already; edit them instead."})
    proposed = StorageCondition(institution=institution, modality=modality, **cleaned)
    # What applies now to what this row covers: the row itself, or for a new modality row the default it replaces.
    before = current or conditions.default
    reason = weakening(before, proposed)
    if reason:
        raise ValidationError(f"Refused: {reason}. The conditions in force are immutable.", code="immutable")
    if current is None:
        proposed.updated_by = _user(principal)
        proposed.save()
        audit.record(
            action="storage_condition.create",
            principal=principal,
            institution=institution,
            obj=proposed,
            modality=modality or "default",
            changes={name: [_shown(getattr(before, name)), _shown(cleaned[name])] for name in CONDITION_FIELDS},
        )
        return proposed
    changes = {
        name: [_shown(getattr(current, name)), _shown(cleaned[name])]
        for name in CONDITION_FIELDS
        if getattr(current, name) != cleaned[name]
    }
    if changes:
        for name, value in cleaned.items():
            setattr(current, name, value)
        current.updated_by = _user(principal)
        current.save()
        audit.record(
            action="storage_condition.update",
            principal=principal,
            institution=institution,
            obj=current,
            modality=modality or "default",
            changes=changes,
        )
    return current


def _shown(value):
    return "no limit" if value is None else value


@transaction.atomic
def remove_storage_condition(*, principal: Principal, condition: StorageCondition) -> None:
    """Remove a per-modality row: its modality falls back to the institution default from the next run."""
    _require_admin_of(principal, condition.institution_id)
    if condition.is_default:
        raise ValidationError("The institution default cannot be removed; change its values instead.", code="default_required")
    default = ConditionSet.of(condition.institution_id).default
    reason = weakening(condition, default)
    if reason:
        raise ValidationError(
            f"Refused: the {condition.modality} conditions are immutable and the default is weaker ({reason}).", code="immutable"
        )
    audit.record(
        action="storage_condition.remove",
        principal=principal,
        institution=condition.institution,
        obj=condition,
        modality=condition.modality,
        changes={name: [_shown(getattr(condition, name)), _shown(getattr(default, name))] for name in CONDITION_FIELDS},
    )
    condition.delete()


# --- Legal holds ----------------------------------------------------------------------------------------------------------


def _clean_reason(reason: str, field: str = "reason") -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationError({field: "Give the reason (a case or matter reference, who asked for it)."})
    if len(reason) > 500:
        raise ValidationError({field: "Keep the reason under 500 characters."})
    return reason


@transaction.atomic
def place_legal_hold(
    *, principal: Principal, institution: Institution, reason: str, patient_id: str = "", study_instance_uid: str = ""
) -> LegalHold:
    """Hold a patient's studies (now and later) or one study: none of them is deleted until the hold is lifted."""
    _require_admin_of(principal, institution.pk)
    reason = _clean_reason(reason)
    patient_id, study_instance_uid = (patient_id or "").strip(), (study_instance_uid or "").strip()
    if bool(patient_id) == bool(study_instance_uid):
        raise ValidationError("Give either a patient ID or a study instance UID.", code="one_subject")
    hold = LegalHold(institution=institution, reason=reason, placed_by=_user(principal), placed_by_name=principal.label()[:200])
    if study_instance_uid:
        study = Study.objects.select_for_update().filter(institution=institution, study_instance_uid=study_instance_uid).first()
        if study is None:
            raise ValidationError({"study_instance_uid": f"No study {study_instance_uid} in this institution's archive."})
        hold.study = study
        hold.subject = f"study {study.study_instance_uid}"[:200]
        detail = {"study_instance_uid": study.study_instance_uid, "patient_id": study.patient.patient_id}
    else:
        patients = list(Patient.objects.select_for_update().filter(institution=institution, patient_id=patient_id)[:2])
        if not patients:
            raise ValidationError({"patient_id": f"No patient with ID {patient_id} in this institution's archive."})
        if len(patients) > 1:
            raise ValidationError(
                {"patient_id": f"Several patients have the ID {patient_id} (different issuers); hold their studies by study UID."}
            )
        hold.patient = patients[0]
        hold.subject = f"patient {patient_id}"[:200]
        detail = {"patient_id": patient_id}
    hold.save()
    audit.record(action="legal_hold.place", principal=principal, institution=institution, obj=hold, reason=reason, **detail)
    return hold


@transaction.atomic
def lift_legal_hold(*, principal: Principal, hold: LegalHold, reason: str) -> LegalHold:
    _require_admin_of(principal, hold.institution_id)
    reason = _clean_reason(reason)
    hold = LegalHold.objects.select_for_update().get(pk=hold.pk)
    if not hold.is_active:
        raise ValidationError(f"This hold was already lifted on {timezone.localtime(hold.lifted_at):%Y-%m-%d %H:%M}.", code="lifted")
    hold.lifted_at = timezone.now()
    hold.lifted_by = _user(principal)
    hold.lifted_by_name = principal.label()[:200]
    hold.lift_reason = reason
    hold.save(update_fields=["lifted_at", "lifted_by", "lifted_by_name", "lift_reason"])
    detail = {"study_instance_uid": hold.study.study_instance_uid} if hold.study_id else {}
    audit.record(
        action="legal_hold.lift",
        principal=principal,
        institution=hold.institution,
        obj=hold,
        reason=reason,
        placed_for=hold.reason,
        **detail,
    )
    return hold


# --- Deleting a study -------------------------------------------------------------------------------------------------------


def deletion_refusal(study: Study, *, conditions: ConditionSet | None = None, today: date | None = None) -> str | None:
    """Why study may not be deleted now; None when it may."""
    if is_held(study):
        return "it is under a legal hold; lift the hold first"
    conditions = conditions or ConditionSet.of(study.institution_id)
    effective = conditions.for_study(study)
    today = today or timezone.localdate()
    if effective.immutable and not effective.past_retention(today):
        if effective.retention_end is None:
            return "the institution's storage conditions are immutable and keep it without limit"
        return f"the institution's storage conditions are immutable and its retention ends on {effective.retention_end:%Y-%m-%d}"
    return None


@dataclass(frozen=True)
class DeletedStudy:
    study_instance_uid: str
    patient_id: str
    instances: int
    bytes_stored: int
    patient_deleted: bool


def delete_study(*, principal: Principal, study: Study, reason: str, actor: str = "", today: date | None = None) -> DeletedStudy:
    """Remove a study from the archive: its index rows (and its patient's, once it has no study left), then its files.

    Refused (DeletionRefused, nothing changed) under a legal hold, or while immutable conditions still keep it.
    The files go after the rows are committed: a crash between leaves unreferenced files, never rows without files.
    """
    _require_admin_of(principal, study.institution_id)
    reason = (reason or "").strip()[:500]
    if not reason:
        raise ValidationError({"reason": "Say why the study is deleted."})
    refusal = None
    with transaction.atomic():
        # Lock the patient, then the study: placing a hold locks the same rows, so a hold and a deletion never cross.
        Patient.objects.select_for_update().filter(pk=study.patient_id).first()
        locked = Study.objects.select_for_update().select_related("patient", "institution").filter(pk=study.pk).first()
        if locked is None:
            raise DeletionRefused(f"Study {study.study_instance_uid} was deleted meanwhile.", code="gone")
        study = locked
        refusal = deletion_refusal(study, today=today)
        if refusal is None:
            deleted = _delete_rows(principal, study, reason=reason, actor=actor)
    if refusal is not None:
        # Recorded outside the transaction above, which changed nothing.
        audit.record(
            action="study.delete",
            principal=principal,
            actor=actor,
            institution=study.institution,
            outcome="denied",
            object_type="images.study",
            object_id=study.study_instance_uid,
            object_repr=str(study)[:200],
            study_instance_uid=study.study_instance_uid,
            refused=refusal,
            reason=reason,
        )
        raise DeletionRefused(f"Study {study.study_instance_uid} cannot be deleted: {refusal}.", code="refused")
    return deleted


def delete_files(names: list[str]) -> int:
    """Delete files no row points at any more; a failure is logged (an unreferenced file harms nothing). Returns failures."""
    failures = 0
    for name in names:
        try:
            delete_quietly(name)
        except Exception:  # OSError locally; botocore errors from an object store
            failures += 1
            logger.exception("could not delete %s from the archive storage", name)
    return failures


def _delete_rows(principal: Principal, study: Study, *, reason: str, actor: str) -> DeletedStudy:
    """In the caller's transaction: the rows, the audit event, and the files once committed."""
    instances = Instance.objects.filter(study=study)
    names = list(instances.values_list("storage_name", flat=True))
    stored = instances.aggregate(total=Sum("size_bytes"))["total"] or 0
    patient = study.patient
    uid = study.study_instance_uid
    try:
        with transaction.atomic():
            instances.delete()
            Series.objects.filter(study=study).delete()
            study.delete()
            patient_deleted = not Study.objects.filter(patient=patient).exists()
            if patient_deleted:
                patient.delete()
    except ProtectedError as error:
        kinds = sorted({str(obj._meta.verbose_name) for obj in error.protected_objects})
        raise DeletionRefused(f"Study {uid} is still used by: {', '.join(kinds)}.", code="in_use") from None
    audit.record(
        action="study.delete",
        principal=principal,
        actor=actor,
        institution=study.institution,
        object_type="images.study",
        object_id=uid,
        object_repr=str(study)[:200],
        study_instance_uid=uid,
        patient_id=patient.patient_id,
        patient_deleted=patient_deleted,
        instances=len(names),
        bytes_stored=stored,
        reason=reason,
    )
    transaction.on_commit(lambda: delete_files(names))
    return DeletedStudy(uid, patient.patient_id, len(names), stored, patient_deleted)
