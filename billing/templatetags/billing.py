"""Template filters for invoices: money and quantities written the same way on every page, PDF and CSV."""

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def money(value) -> str:
    """1234.5 -> '1,234.50'; negative amounts (credit notes) keep their sign."""
    if value is None or value == "":
        return ""
    return f"{Decimal(value):,.2f}"


@register.filter
def quantity(value, places: int = 4) -> str:
    """A Decimal written without trailing zeros past what it needs: 2.50 -> '2.5', 3.0000 -> '3'."""
    if value is None or value == "":
        return ""
    text = f"{Decimal(value):,.{int(places)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
