"""View decorators that ask the access gate: log in first, then hold the role asked for."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login

from .access import Role


def _login_then(check):
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            principal = request.principal
            if not principal.is_authenticated:
                return redirect_to_login(request.get_full_path())
            check(principal)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def member_required(view):
    """Logged in and acting for an institution (or provider staff)."""
    return _login_then(lambda p: None)(view)


def role_required(role: Role):
    """Logged in with role in the active institution; 403 naming the role otherwise."""
    return _login_then(lambda p: p.require_role(role))


def admin_required(view):
    """Institution admin of the active institution, or provider staff."""

    def check(p):
        if not p.is_provider_staff:
            p.require_role(Role.ADMIN)

    return _login_then(check)(view)


def provider_staff_required(view):
    return _login_then(lambda p: p.require_provider_staff())(view)
