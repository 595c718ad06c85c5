"""medarchive: a multi-tenant medical image archive run as a service."""

from .celery import app as celery_app

__all__ = ["celery_app"]
