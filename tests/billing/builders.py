"""Backup rows for billing tests, made directly with the ORM (as the negotiation and the runs would leave them)."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from decimal import Decimal

from django.utils import timezone

from backup.models import BackupMode, BackupObject, BackupRun, BackupSet, Contract

KIND_OF_MODE = {
    BackupMode.ALL_AT_TIME: BackupObject.Kind.ALL,
    BackupMode.PER_INSTITUTION: BackupObject.Kind.ACQUIRING_INSTITUTION,
    BackupMode.PER_PATIENT: BackupObject.Kind.PATIENT,
    BackupMode.PER_EXAMINATION: BackupObject.Kind.STUDY,
}


# Keys of patients and studies are their numbers in the archive (Patient.pk, Study.pk), never a name.
_numbers = itertools.count(101)


def at(*args) -> datetime:
    """An aware datetime in the current time zone: at(2025, 3, 1, 10) is 1 March 2025, 10:00."""
    return timezone.make_aware(datetime(*args))


def accepted_contract(
    institution,
    *,
    mode: str,
    points,
    rate,
    period_start: date,
    accepted_at: datetime,
    currency: str = "EUR",
    period_end: date | None = None,
    terminated_at: datetime | None = None,
    title: str = "",
) -> Contract:
    contract = Contract.objects.create(
        institution=institution,
        title=title,
        status=Contract.Status.TERMINATED if terminated_at else Contract.Status.ACCEPTED,
        awaiting="",
        mode=mode,
        period_start=period_start,
        period_end=period_end,
        accounting_points=Decimal(str(points)),
        rate=Decimal(str(rate)),
        currency=currency,
        accepted_at=accepted_at,
        terminated_at=terminated_at,
    )
    return contract


def backup_object(contract: Contract, label: str, *, created_at: datetime, key: str | None = None, verified_bytes: int | None = None):
    """An object of backup added at created_at; with verified_bytes, a verified set of that size made the same day."""
    kind = KIND_OF_MODE[contract.mode]
    if key is None:
        key = str(next(_numbers)) if kind in (BackupObject.Kind.PATIENT, BackupObject.Kind.STUDY) else label
    obj = BackupObject.objects.create(contract=contract, kind=kind, key=key, label=label)
    BackupObject.objects.filter(pk=obj.pk).update(created_at=created_at)
    obj.refresh_from_db()
    if verified_bytes is not None:
        backup_set(obj, created_at, BackupSet.Status.VERIFIED, size=verified_bytes)
    return obj


def backup_set(obj: BackupObject, when: datetime, status: str, *, size: int = 0) -> BackupSet:
    backup_set = BackupSet.objects.create(contract=obj.contract, backup_object=obj, target="backup", status=status, bytes=size)
    BackupSet.objects.filter(pk=backup_set.pk).update(
        created_at=when, verified_at=when if status in (BackupSet.Status.VERIFIED, BackupSet.Status.DAMAGED) else None
    )
    backup_set.refresh_from_db()
    return backup_set


def backup_run(contract: Contract, when: datetime, status: str, message: str = "") -> BackupRun:
    run = BackupRun.objects.create(contract=contract, kind=BackupRun.Kind.BACKUP, status=status, message=message, trigger="schedule")
    BackupRun.objects.filter(pk=run.pk).update(created_at=when)
    return run
