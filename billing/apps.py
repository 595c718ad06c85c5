from django.apps import AppConfig, apps


class BillingConfig(AppConfig):
    """Tariffs, accounting and invoices."""

    name = "billing"

    def ready(self):
        from subscribers import portal
        from subscribers.models import Role

        from . import checks  # noqa: F401 (registers the settings checks)
        from .tariffs import current_terms

        # The backup negotiation starts from the tariff. backup never imports billing: it reads this attribute of
        # its own app config, current_terms(mode, on_date) -> TariffTerms | None.
        apps.get_app_config("backup").tariff_terms = current_terms

        portal.register(
            portal.PortalEntry(
                "Invoices",
                "Your institution's invoices for backup, with every object of backup, as PDF and CSV.",
                "billing-invoices",
                Role.ADMIN,
                order=65,
            )
        )
        for title, text, url_name, order in (
            ("Billing", "Revenue per month and backup mode; invoice a month for every institution or one.", "billing-overview", 20),
            ("Invoices", "Every institution's invoices and credit notes, as PDF and CSV.", "billing-invoices", 21),
            ("Tariffs", "Accounting points and rates of each backup mode, and the dates they apply.", "billing-tariffs", 22),
        ):
            portal.register(portal.PortalEntry(title, text, url_name, order=order, provider_staff=True))
