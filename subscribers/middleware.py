"""Puts the caller's Principal on every request (request.principal), from session or bearer token."""

from django.contrib.auth import logout
from django.http import JsonResponse
from django.utils.functional import SimpleLazyObject

from . import audit
from .access import ANONYMOUS, AuthenticationFailed, principal_for_token, principal_from_session, token_from_authorization_header


class PrincipalMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw = token_from_authorization_header(request.headers.get("Authorization", ""))
        if raw is not None:
            try:
                request.principal = principal_for_token(raw)
            except AuthenticationFailed as failure:
                audit.record_refusal(
                    request, action="token.refused", reason=failure.reason, code=failure.code, institution=failure.institution
                )
                response = JsonResponse({"error": failure.reason, "code": failure.code}, status=401)
                response["WWW-Authenticate"] = 'Bearer realm="medarchive", error="invalid_token"'
                return response
            return self.get_response(request)

        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            principal = principal_from_session(request)
            if principal.institution is None and not principal.is_provider_staff:
                # Every institution of this user was suspended (or left) mid-session: end the session.
                logout(request)
                request.principal = ANONYMOUS
            else:
                request.principal = principal
        else:
            request.principal = SimpleLazyObject(lambda: ANONYMOUS)
        return self.get_response(request)
