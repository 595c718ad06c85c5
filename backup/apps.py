from django.apps import AppConfig


class BackupConfig(AppConfig):
    """Backup contracts, runs, verification and restore."""

    name = "backup"
    # Set by billing in its ready(): (mode, on_date) -> the tariff's terms or None. Backup never imports billing.
    tariff_terms = None

    def ready(self):
        from subscribers import portal
        from subscribers.models import Role

        portal.register(
            portal.PortalEntry(
                "Backup contracts",
                "Your backup contracts with the provider: the terms, whose turn it is, the history, and the state of every backup.",
                "backup-contracts",
                Role.ADMIN,
                order=60,
            )
        )
        portal.register(
            portal.PortalEntry(
                "Backup contracts",
                "Every institution's backup contracts: propose, answer counter-proposals, terminate, watch the backups.",
                "backup-contracts",
                order=10,
                provider_staff=True,
            )
        )
