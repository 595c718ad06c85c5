"""The billing settings are checked at start-up, so a wrong tax rate stops the service before it reaches an invoice."""

from decimal import Decimal

from billing.checks import billing_settings


def test_default_billing_settings_pass():
    assert billing_settings(None) == []


def test_wrong_billing_settings_are_reported(settings):
    settings.BILLING_TAX_RATE = Decimal("119")
    settings.BILLING_INVOICE_PREFIX = "ma-"
    settings.BILLING_PAYMENT_DAYS = -1
    settings.BILLING_CURRENCY = "euro"
    settings.BILLING_PROVIDER_NAME = " "

    assert sorted(error.id for error in billing_settings(None)) == [f"billing.E00{n}" for n in range(1, 6)]
