"""What the storage conditions say about one study or one series: pure decisions from the condition rows.

A per-modality row replaces the institution default for that modality. A study with several modalities (CT and SR)
is held to the strictest of their rows: the latest retention end (no limit wins), immutable if any row is, kept if
any row keeps, the most backup copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime

from dateutil.relativedelta import relativedelta
from django.db.models import Q
from django.utils import timezone

from ..models import LegalHold, StorageCondition, Study

# Without any row an institution keeps everything as received, without limit.
IMPLICIT_DEFAULT = StorageCondition(modality="")


def retention_end(condition: StorageCondition, *, study_date: date | None, received_at: datetime) -> date | None:
    """The first day the study is past its retention under condition; None when it is kept without limit.

    Counted from the study date, or from receipt when asked (and for a study without a date).
    """
    if condition.retention_years is None:
        return None
    if condition.retention_from == StorageCondition.RetentionFrom.STUDY_DATE and study_date is not None:
        start = study_date
    else:
        start = timezone.localdate(received_at)
    return start + relativedelta(years=condition.retention_years)  # 29 February + 1 year is 28 February


@dataclass(frozen=True)
class Effective:
    """The conditions a study is held to."""

    retention_end: date | None
    at_retention_end: str
    immutable: bool
    required_backup_copies: int

    def past_retention(self, today: date) -> bool:
        return self.retention_end is not None and self.retention_end <= today

    @property
    def deletes(self) -> bool:
        return self.at_retention_end == StorageCondition.AtRetentionEnd.DELETE


class ConditionSet:
    """An institution's condition rows, read once per run or page."""

    def __init__(self, rows: Iterable[StorageCondition]):
        rows = list(rows)
        self.default = next((r for r in rows if not r.modality), IMPLICIT_DEFAULT)
        self.by_modality = {r.modality: r for r in rows if r.modality}

    @classmethod
    def of(cls, institution_id: int) -> ConditionSet:
        return cls(StorageCondition.objects.filter(institution_id=institution_id))

    def for_modality(self, modality: str) -> StorageCondition:
        return self.by_modality.get(modality or "", self.default)

    def compression_for(self, modality: str) -> str:
        return self.for_modality(modality).compression

    @property
    def compresses(self) -> bool:
        return bool(self.default.compression) or any(r.compression for r in self.by_modality.values())

    def effective(self, *, modalities: Iterable[str], study_date: date | None, received_at: datetime) -> Effective:
        rows = [self.for_modality(m) for m in modalities if m] or [self.default]
        ends = [retention_end(r, study_date=study_date, received_at=received_at) for r in rows]
        return Effective(
            retention_end=None if any(e is None for e in ends) else max(ends),
            at_retention_end=(
                StorageCondition.AtRetentionEnd.DELETE
                if all(r.at_retention_end == StorageCondition.AtRetentionEnd.DELETE for r in rows)
                else StorageCondition.AtRetentionEnd.KEEP_AND_FLAG
            ),
            immutable=any(r.immutable for r in rows),
            required_backup_copies=max(r.required_backup_copies for r in rows),
        )

    def for_study(self, study: Study) -> Effective:
        return self.effective(modalities=study.modalities, study_date=study.study_date, received_at=study.received_at)


def weakening(old: StorageCondition, new: StorageCondition) -> str | None:
    """Why going from old to new would let something be deleted earlier than an immutable old allows; None if not."""
    if not old.immutable:
        return None
    if not new.immutable:
        return "immutability cannot be turned off"
    if old.retention_years is None and new.retention_years is not None:
        return "the retention period of an immutable condition cannot be given a limit"
    if old.retention_years is not None and new.retention_years is not None and new.retention_years < old.retention_years:
        return f"the retention period of an immutable condition cannot be shortened below {old.retention_years} years"
    if old.retention_years is not None and new.retention_from != old.retention_from:
        return "the start of an immutable retention period cannot be changed"
    return None


def held_study_ids(institution_id: int) -> set[int]:
    """Studies under a hold in force: on the study itself, or on its patient."""
    holds = LegalHold.objects.active().filter(institution_id=institution_id)
    studies = Study.objects.filter(institution_id=institution_id).filter(
        Q(pk__in=holds.filter(study__isnull=False).values("study_id"))
        | Q(patient_id__in=holds.filter(patient__isnull=False).values("patient_id"))
    )
    return set(studies.values_list("pk", flat=True))


def is_held(study: Study) -> bool:
    return (
        LegalHold.objects.active()
        .filter(institution_id=study.institution_id)
        .filter(Q(study_id=study.pk) | Q(patient_id=study.patient_id))
        .exists()
    )


@dataclass(frozen=True)
class StudyState:
    """One study as the conditions see it (no patient data beyond its identifiers)."""

    pk: int
    study_instance_uid: str
    effective: Effective
    held: bool
    backup_copies: int

    def past_retention(self, today: date) -> bool:
        return self.effective.past_retention(today)

    @property
    def lacks_backup_copies(self) -> bool:
        return self.backup_copies < self.effective.required_backup_copies


def study_states(institution_id: int, conditions: ConditionSet) -> Iterator[StudyState]:
    """Every study of the institution with the conditions it is held to, read in chunks."""
    held = held_study_ids(institution_id)
    rows = (
        Study.objects.filter(institution_id=institution_id)
        .order_by("pk")
        .values_list("pk", "study_instance_uid", "modalities_in_study", "study_date", "received_at", "backup_copies")
    )
    for pk, uid, modalities, study_date, received_at, copies in rows.iterator(chunk_size=2000):
        effective = conditions.effective(modalities=modalities.split("\\"), study_date=study_date, received_at=received_at)
        yield StudyState(pk=pk, study_instance_uid=uid, effective=effective, held=pk in held, backup_copies=copies)
