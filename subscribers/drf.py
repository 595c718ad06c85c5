"""Django REST framework glue for the access gate: authentication, permissions, error answers."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import authentication, exceptions, permissions

from .access import RoleRequired


class TokenAuthentication(authentication.BaseAuthentication):
    """The PrincipalMiddleware has already checked any bearer token; DRF only picks up its verdict."""

    def authenticate(self, request):
        principal = getattr(request._request, "principal", None)
        if principal is not None and principal.kind in ("token", "device"):
            return (principal.user, principal)
        return None

    def authenticate_header(self, request):
        return 'Bearer realm="medarchive"'


class SessionAuthentication(authentication.SessionAuthentication):
    """Portal session with CSRF protection; the principal carries the active institution."""

    def authenticate(self, request):
        principal = getattr(request._request, "principal", None)
        if principal is None or principal.kind != "user":
            return None
        self.enforce_csrf(request)
        return (principal.user, principal)


class IsMember(permissions.BasePermission):
    """Any authenticated principal acting for an institution (or provider staff)."""

    message = "Authentication credentials were not provided."

    def has_permission(self, request, view):
        principal = request.auth
        return principal is not None and (principal.institution is not None or principal.is_provider_staff)


def HasRole(role):  # noqa: N802 (reads as a class in permission_classes)
    class _HasRole(IsMember):
        def has_permission(self, request, view):
            if not super().has_permission(request, view):
                return False
            request.auth.require_role(role)
            return True

    _HasRole.__name__ = f"HasRole_{role}"
    return _HasRole


def exception_handler(exc, context):
    """Plain JSON errors; foreign objects are 404 without detail, missing roles 403 naming the role."""
    from rest_framework.views import exception_handler as drf_exception_handler  # not at import: DRF settings import us

    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, RoleRequired):
        exc = exceptions.PermissionDenied(str(exc))
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or "You do not have permission to do this.")
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"]), "code": getattr(response.data["detail"], "code", "error")}
    return response
