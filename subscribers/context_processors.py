"""Template context: the caller's principal and the institutions it may switch to."""

from . import portal
from .access import active_memberships
from .models import Notification


def principal(request):
    p = getattr(request, "principal", None)
    if p is None or not p.is_authenticated or p.user is None:
        return {"principal": p}
    return {
        "principal": p,
        "switchable_memberships": lambda: list(active_memberships(p.user)),
        "portal_entries": lambda: portal.entries_for(p),
        "provider_entries": lambda: portal.provider_entries_for(p),
        "unread_notifications": lambda: Notification.objects.filter(user=p.user, read_at__isnull=True).count(),
    }
