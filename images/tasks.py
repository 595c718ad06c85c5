"""Celery tasks of the archive, found by the worker's autodiscovery (medarchive/celery.py looks for <app>.tasks)."""

from .storage_conditions.tasks import enforce_institution_storage_conditions, enforce_storage_conditions

__all__ = ["enforce_institution_storage_conditions", "enforce_storage_conditions"]
