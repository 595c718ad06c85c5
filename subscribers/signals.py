"""Audit of logins, logouts and failed logins (Django's auth signals); ORM writes only."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from . import audit
from .access import active_memberships
from .models import AuditEvent, User


def _home_institution(user):
    """The institution a login belongs to in the audit trail: the user's first active one."""
    membership = active_memberships(user).first() if user is not None and user.pk else None
    return membership.institution if membership else None


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    audit.record(
        action="auth.login", address=audit.client_address(request), user=user, actor=user.username, institution=_home_institution(user)
    )


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        audit.record(
            action="auth.logout", address=audit.client_address(request), user=user, actor=user.username, institution=_home_institution(user)
        )


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    known = User.objects.filter(username=username).first() if username else None
    audit.record(
        action="auth.login_failed",
        address=audit.client_address(request),
        outcome=AuditEvent.Outcome.FAILURE,
        actor=username or "anonymous",
        institution=_home_institution(known),
        username=username,
    )
