"""Tunables of the backup engine, each overridable by a Django setting of the same name."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

DEFAULTS = {
    # A running run whose heartbeat is older than this (or a queued run no worker took) is taken for dead.
    "BACKUP_RUN_STALE_MINUTES": 10,
    # After a failed scheduled backup, the dispatcher waits this long before trying the contract again.
    "BACKUP_RETRY_MINUTES": 15,
    # Files copied (and re-read) at the same time: fsync and object-store round trips overlap.
    "BACKUP_COPY_THREADS": 8,
    # Progress (and heartbeat) is written to the database at most this often.
    "BACKUP_PROGRESS_SECONDS": 1.0,
}


def value(name: str):
    return getattr(settings, name, DEFAULTS[name])


def stale_after() -> timedelta:
    return timedelta(minutes=value("BACKUP_RUN_STALE_MINUTES"))


def retry_after() -> timedelta:
    return timedelta(minutes=value("BACKUP_RETRY_MINUTES"))


def copy_threads() -> int:
    return max(1, int(value("BACKUP_COPY_THREADS")))


def progress_seconds() -> float:
    return float(value("BACKUP_PROGRESS_SECONDS"))
