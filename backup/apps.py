from django.apps import AppConfig


class BackupConfig(AppConfig):
    """Backup contracts, runs, verification and restore."""

    name = "backup"
