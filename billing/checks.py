"""System checks of the billing settings, so a mistyped tax rate or prefix stops the service at start, not an invoice."""

import re
from decimal import Decimal

from django.conf import settings
from django.core.checks import Error, register

_PREFIX = re.compile(r"^[A-Z0-9]{1,12}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@register()
def billing_settings(app_configs, **kwargs):
    errors = []
    rate = settings.BILLING_TAX_RATE
    if not isinstance(rate, Decimal) or not (Decimal(0) <= rate < Decimal(100)):
        errors.append(Error(f"BILLING_TAX_RATE is {rate!r}: give the percent, from 0 to under 100 (e.g. 19).", id="billing.E001"))
    if not _PREFIX.match(settings.BILLING_INVOICE_PREFIX or ""):
        errors.append(Error("BILLING_INVOICE_PREFIX must be 1 to 12 capital letters or digits (e.g. MA).", id="billing.E002"))
    if settings.BILLING_PAYMENT_DAYS < 0:
        errors.append(Error("BILLING_PAYMENT_DAYS cannot be negative.", id="billing.E003"))
    if not _CURRENCY.match(settings.BILLING_CURRENCY or ""):
        errors.append(Error("BILLING_CURRENCY must be a three-letter ISO 4217 code such as EUR.", id="billing.E004"))
    if not (settings.BILLING_PROVIDER_NAME or "").strip():
        errors.append(Error("BILLING_PROVIDER_NAME is empty: invoices must name the provider.", id="billing.E005"))
    return errors
