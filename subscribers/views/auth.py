"""Signing in and out, changing the password, and choosing the active institution."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.urls import reverse_lazy
from django.views.decorators.http import require_POST

from .. import audit
from ..access import SESSION_INSTITUTION_KEY, NotVisible, active_memberships, switch_institution
from ..decorators import member_required
from ..forms import PortalAuthenticationForm
from ..models import AuditEvent


class LoginView(auth_views.LoginView):
    """Django's login (django-axes counts its failures) that starts the session in the user's first institution."""

    form_class = PortalAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        first = active_memberships(form.get_user()).first()
        if first is not None:
            self.request.session[SESSION_INSTITUTION_KEY] = first.institution_id
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    success_url = reverse_lazy("password_change_done")

    def form_valid(self, form):
        response = super().form_valid(form)
        audit.record(action="user.password_change", request=self.request, obj=form.user)
        return response


@require_POST
@member_required
def switch_institution_view(request):
    requested = request.POST.get("institution", "")
    try:
        principal = switch_institution(request, requested)
    except NotVisible:
        # Not a membership of this user: a forged or stale form. Say "not found" and keep the current institution.
        audit.record(action="institution.switch", request=request, outcome=AuditEvent.Outcome.DENIED, requested=str(requested)[:40])
        raise
    audit.record(action="institution.switch", principal=principal, request=request, obj=principal.institution)
    messages.success(request, f"You are now working for {principal.institution.name}.")
    return redirect("home")
