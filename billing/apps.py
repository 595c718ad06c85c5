from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Tariffs, accounting and invoices."""

    name = "billing"
