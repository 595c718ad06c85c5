"""Portal forms of the subscribers app: they parse input only; services decide and change state."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.utils import timezone

from . import audit
from .access import user_may_log_in
from .models import AuditEvent, Device, Role, validate_ae_title

NO_ACTIVE_INSTITUTION = "Your institution is suspended or you have no active institution; contact your administrator."


def add_service_error(form: forms.Form, error: ValidationError, fields_by_code: dict[str, str] | None = None) -> None:
    """Show a service's ValidationError on the form, on the field its code points to when we know it."""
    fields_by_code = fields_by_code or {}
    if hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for item in error.error_list:
        field = fields_by_code.get(item.code or "")
        form.add_error(field if field in form.fields else None, item)


class PortalAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing users whose every institution is suspended (or who have none)."""

    error_messages = {**AuthenticationForm.error_messages, "no_active_institution": NO_ACTIVE_INSTITUTION}

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not user_may_log_in(user):
            audit.record(
                action="auth.login_refused",
                request=self.request,
                outcome=AuditEvent.Outcome.DENIED,
                user=user,
                actor=user.username,
                reason="no_active_institution",
            )
            raise ValidationError(self.error_messages["no_active_institution"], code="no_active_institution")


class RolesField(forms.MultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs):
        kwargs.setdefault("choices", Role.choices)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)


class AddMemberForm(forms.Form):
    username = forms.CharField(
        max_length=150, help_text="Letters, digits and @/./+/-/_ only. An existing user is added to this institution."
    )
    email = forms.EmailField(required=False)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    roles = RolesField()

    service_fields = {"username_required": "username", "user_exists": "username", "invalid": "username", "unknown_role": "roles"}


class MemberRolesForm(forms.Form):
    roles = RolesField()
    is_active = forms.BooleanField(required=False, label="Active", help_text="An inactive member cannot log in for this institution.")


class IssueTokenForm(forms.Form):
    """A token for a member of the institution (admins) — the membership choices come from a scoped selector."""

    membership = forms.ModelChoiceField(queryset=None, label="For member", empty_label=None)
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'PACS upload script'.")
    days = forms.IntegerField(label="Valid for (days)", min_value=1)

    service_fields = {"name_required": "name", "membership_inactive": "membership", "expiry_too_far": "days", "expiry_past": "days"}

    def __init__(self, *args, memberships=None, **kwargs):
        super().__init__(*args, **kwargs)
        if memberships is None:
            del self.fields["membership"]
        else:
            self.fields["membership"].queryset = memberships
            self.fields["membership"].label_from_instance = lambda m: m.user.get_full_name() or m.user.username
        days = self.fields["days"]
        days.max_value = settings.API_TOKEN_MAX_DAYS
        days.validators.append(MaxValueValidator(settings.API_TOKEN_MAX_DAYS))
        days.widget.attrs["max"] = settings.API_TOKEN_MAX_DAYS
        days.initial = settings.API_TOKEN_DEFAULT_DAYS


class ApplicationEntityForm(forms.Form):
    ae_title = forms.CharField(
        label="AE title", max_length=16, validators=[validate_ae_title], help_text="1 to 16 characters, as set on the modality or PACS."
    )
    host = forms.CharField(max_length=255, help_text="Host name or IP address the node connects from.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=104)
    can_send = forms.BooleanField(required=False, initial=True, label="May send (store to the archive, query)")
    can_receive = forms.BooleanField(required=False, label="May receive (C-MOVE destination)")
    description = forms.CharField(max_length=200, required=False)

    service_fields = {"invalid_ae_title": "ae_title", "ae_taken": "ae_title", "host_invalid": "host", "port_invalid": "port"}

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if editing:
            # The listener knows an AE by title and host together: changing either is a new registration.
            for name in ("ae_title", "host"):
                self.fields[name].disabled = True
                self.fields[name].help_text = "Fixed once registered; register a new AE title to change it."


class RegisterDeviceForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=Device.Kind.choices)
    description = forms.CharField(max_length=200, required=False)

    service_fields = {"name_required": "name", "device_exists": "name", "kind_invalid": "kind"}


class AuditFilterForm(forms.Form):
    action = forms.CharField(required=False, max_length=60, help_text="Starts with, e.g. 'token.' or 'auth.login'.")
    outcome = forms.ChoiceField(required=False, choices=[("", "Any"), *AuditEvent.Outcome.choices])
    actor = forms.CharField(required=False, max_length=200, help_text="Part of the name.")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="Until (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    institution = forms.SlugField(required=False, label="Institution (slug)")

    def __init__(self, *args, provider_staff: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not provider_staff:
            del self.fields["institution"]

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date is before the start date.")
        return cleaned

    def filters(self) -> dict:
        """Arguments for selectors.filter_audit_events from the fields that are valid (call after is_valid())."""
        data = getattr(self, "cleaned_data", {})
        since, until = data.get("since"), data.get("until")
        return {
            "action": data.get("action") or "",
            "outcome": data.get("outcome") or "",
            "actor": data.get("actor") or "",
            "since": _start_of_day(since) if since else None,
            "until": _start_of_day(until + timedelta(days=1)) if until else None,
            "institution": data.get("institution") or "",
        }


def _start_of_day(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
