"""Portal entries contributed by other apps (home cards and navigation), so subscribers never imports them.

An app registers its pages in its AppConfig.ready(); the home page and the navigation show the
entries whose role the caller holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from .access import Principal


@dataclass(frozen=True)
class PortalEntry:
    title: str
    text: str
    url_name: str
    role: str | None = None  # None: every member
    order: int = 50
    provider_staff: bool = False  # a provider-staff page: listed under "Provider", for staff only

    @property
    def url(self) -> str:
        return reverse(self.url_name)


_ENTRIES: dict[tuple[str, bool], PortalEntry] = {}


def register(entry: PortalEntry) -> None:
    _ENTRIES[(entry.url_name, entry.provider_staff)] = entry


def entries_for(principal: Principal) -> list[PortalEntry]:
    if principal is None or principal.institution is None:
        return []
    return sorted(
        (e for e in _ENTRIES.values() if not e.provider_staff and (e.role is None or principal.has_role(e.role))),
        key=lambda e: (e.order, e.title),
    )


def provider_entries_for(principal: Principal) -> list[PortalEntry]:
    if principal is None or not principal.is_provider_staff:
        return []
    return sorted((e for e in _ENTRIES.values() if e.provider_staff), key=lambda e: (e.order, e.title))


def roles_with_entries() -> set[str]:
    return {e.role for e in _ENTRIES.values() if e.role}
