"""The home page: what the caller's roles let them do, and the provider's overview for its staff."""

from dataclasses import dataclass

from django.shortcuts import render
from django.urls import resolve, reverse

from .. import portal, selectors
from ..access import Principal
from ..decorators import member_required
from ..models import Role


@dataclass(frozen=True)
class Card:
    title: str
    text: str
    url: str = ""  # empty: the feature is not built yet, so the card is text, never a dead link


# What each role will be able to do once its feature lands; shown as text, never as a dead link.
COMING = {
    Role.RECEIVE: Card("Worklist", "Find and view studies sent to your institution (coming with the delivery work)."),
    Role.REGISTER: Card("Upload", "Send images from the browser; modalities and PACS send over DICOM to your registered AE titles."),
    Role.PRINT: Card("Printing", "Print film sheets of chosen images (coming soon)."),
    Role.SOFTWARE: Card("Medical software", "Run licensed software on images (coming soon)."),
}


def cards_for(principal: Principal) -> list[Card]:
    entries = portal.entries_for(principal)
    cards = [Card(e.title, e.text, e.url) for e in entries]
    served = {e.role for e in entries}
    cards += [card for role, card in COMING.items() if principal.has_role(role) and role not in served]
    if principal.institution is not None and (principal.has_role(Role.ADMIN) or principal.is_provider_staff):
        cards += [
            Card("Members", "Add people, set their roles, deactivate leavers.", reverse("manage-members")),
            Card("API tokens", "Credentials for scripts and DICOMweb clients of your institution.", reverse("manage-tokens")),
            Card(
                "DICOM AE titles", "The modalities and PACS allowed to send to and receive from the archive.", reverse("manage-ae-titles")
            ),
            Card("Devices", "Print agents and gateways with their own credential.", reverse("manage-devices")),
        ]
        if not principal.is_provider_staff:  # staff find it under "Provider", for every institution
            cards.append(Card("Audit log", "Who did what, when, from where.", reverse("audit-log")))
    if principal.membership is not None:
        cards.append(Card("My API tokens", "Tokens that act as you, for your own scripts.", reverse("my-tokens")))
    return cards


# The worklist is the home page of receiving users. It is found by its URL name, as portal entries are, so
# subscribers never imports the images app that serves it.
WORKLIST_URL_NAME = "study-list"


@member_required
def home(request):
    principal = request.principal
    if principal.institution is not None and principal.has_role(Role.RECEIVE):
        # Served here rather than redirected: "/" stays the address to bookmark, and the worklist's own links go
        # to its URL.
        worklist = resolve(reverse(WORKLIST_URL_NAME))
        return worklist.func(request, *worklist.args, **worklist.kwargs)
    context = {"cards": cards_for(principal)}
    if principal.is_provider_staff:
        context["institutions"] = selectors.institutions_visible_to(principal).order_by("name")
    return render(request, "subscribers/home.html", context)
