"""Audit of logins, logouts and failed logins (Django's auth signals); ORM writes only."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from . import audit
from .models import AuditEvent


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    audit.record(action="auth.login", address=audit.client_address(request), user=user, actor=user.username)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        audit.record(action="auth.logout", address=audit.client_address(request), user=user, actor=user.username)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    audit.record(
        action="auth.login_failed",
        address=audit.client_address(request),
        outcome=AuditEvent.Outcome.FAILURE,
        actor=username or "anonymous",
        username=username,
    )
