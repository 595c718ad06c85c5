"""Template filters for DICOM values shown to people: person names, DICOM dates and modality lists."""

from __future__ import annotations

from django import template

register = template.Library()


def readable_person_name(value: str | None) -> str:
    """DICOM PN 'Family^Given^Middle^Prefix^Suffix' (alphabetic group only) as 'Family, Given Middle, Suffix'."""
    if not value:
        return ""
    alphabetic = str(value).split("=", 1)[0]
    parts = [p.strip() for p in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    first = " ".join(p for p in (prefix, given, middle) if p)
    name = ", ".join(p for p in (family, first) if p)
    if suffix:
        name = f"{name}, {suffix}" if name else suffix
    return name or alphabetic.replace("^", " ").strip()


@register.filter
def person_name(value):
    """{{ patient.patient_name|person_name }} → 'Doe, John' for 'DOE^JOHN'."""
    return readable_person_name(value)
