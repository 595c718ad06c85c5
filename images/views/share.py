"""The study page's share dialog and revoke buttons: form posts that call images.sharing.services (which audit and notify).

A refused share re-renders the study page with the reason and the dialog open, and changes nothing; a successful one
redirects back to the page (so a reload does not post again) with a message saying what happened.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from subscribers.access import NotVisible, RoleRequired, active_memberships
from subscribers.decorators import member_required
from subscribers.models import Institution, Role, User

from .. import selectors
from ..models import Share
from ..sharing import services as sharing
from . import study as study_views


class ShareForm(forms.Form):
    """Whom to share with (an institution, or one user of another institution), until when, and how much."""

    INSTITUTION, USER = "institution", "user"

    recipient_kind = forms.ChoiceField(
        label="Share with",
        choices=[(INSTITUTION, "Another institution"), (USER, "One person at another institution")],
        initial=INSTITUTION,
        widget=forms.RadioSelect,
    )
    institution = forms.CharField(
        label="Institution",
        required=False,
        max_length=200,
        help_text="Its name as registered here, or its short name (for example beta-clinic).",
    )
    username = forms.CharField(label="Username", required=False, max_length=150, help_text="The person's username on medarchive.")
    expires_on = forms.DateField(
        label="Until (optional)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The share ends at the end of this day; leave empty to share until you revoke it.",
    )
    whole_patient = forms.BooleanField(
        label="All studies of this patient, including those that arrive later",
        required=False,
    )

    def __init__(self, *args, owner: Institution, **kwargs):
        super().__init__(*args, label_suffix="", **kwargs)
        self.owner = owner
        self.fields["expires_on"].help_text += f" Days end at midnight, {timezone.get_current_timezone_name()} time."

    def clean(self):
        data = super().clean()
        data["with_institution"] = data["with_user"] = None
        kind = data.get("recipient_kind")
        if kind == self.INSTITUTION:
            data["with_institution"] = self._institution(data.get("institution", "").strip())
        elif kind == self.USER:
            data["with_user"] = self._user(data.get("username", "").strip())
        day = data.get("expires_on")
        # The end of the chosen day, in the portal's time zone; the service refuses a moment already past.
        data["expires_at"] = timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min)) if day else None
        return data

    def _institution(self, text: str) -> Institution | None:
        if not text:
            self.add_error("institution", "Enter the institution to share with.")
            return None
        by_slug = Institution.objects.filter(slug=text.lower()).first()
        if by_slug is not None:
            return by_slug
        by_name = list(Institution.objects.filter(name__iexact=text)[:2])
        if len(by_name) == 1:
            return by_name[0]
        if by_name:
            self.add_error("institution", f"Several institutions are called “{text}”: enter the short name of the one you mean.")
        else:
            self.add_error("institution", f"No institution is called “{text}”. Check the spelling, or ask them for their short name.")
        return None

    def _user(self, username: str) -> User | None:
        if not username:
            self.add_error("username", "Enter the username of the person to share with.")
            return None
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            self.add_error("username", f"No active user is called “{username}”.")
            return None
        if not active_memberships(user).exclude(institution=self.owner).exists():
            self.add_error(
                "username",
                f"{username} does not work for another institution: members of {self.owner.name} already see its studies.",
            )
            return None
        return user


def _recipient(share: Share) -> str:
    return share.with_institution.name if share.with_institution_id else f"{share.with_user.username}"


@require_POST
@member_required
def share_study(request, study_uid):
    principal = request.principal
    study = selectors.get_study(principal, study_uid)
    if study.institution_id != principal.institution_id:
        raise NotVisible()  # a receiver cannot pass a study on
    if not study_views.may_share(principal, study):
        raise RoleRequired(Role.RECEIVE)
    form = ShareForm(request.POST, owner=study.institution)
    if not form.is_valid():
        return study_views.render_study_page(request, study, share_form=form, status=400)
    data = form.cleaned_data
    active_before = {s.pk: s.expires_at for s in selectors.shares_of_study(principal, study).active()}
    whole_patient = data["whole_patient"]
    try:
        given = sharing.share(
            principal=principal,
            study=None if whole_patient else study,
            patient=study.patient if whole_patient else None,
            with_institution=data["with_institution"],
            with_user=data["with_user"],
            expires_at=data["expires_at"],
        )
    except ValidationError as error:
        form.add_error(None, error)
        return study_views.render_study_page(request, study, share_form=form, status=400)
    what = "All studies of this patient are" if whole_patient else "This study is"
    until = f" until {timezone.localtime(given.expires_at):%Y-%m-%d %H:%M}" if given.expires_at else ""
    if given.pk not in active_before:
        messages.success(request, f"{what} now shared with {_recipient(given)}{until}.")
    elif active_before[given.pk] != given.expires_at:
        messages.success(request, f"{what} already shared with {_recipient(given)}: the share now lasts{until or ' until revoked'}.")
    else:
        messages.info(request, f"{what} already shared with {_recipient(given)}{until}: nothing changed.")
    return redirect(reverse("study-detail", kwargs={"study_uid": study.study_instance_uid}) + "#shares")


@require_POST
@member_required
def revoke_share(request, study_uid, share_id):
    principal = request.principal
    study = selectors.get_study(principal, study_uid)
    share = selectors.shares_of_study(principal, study).filter(pk=share_id).first()
    if share is None:
        raise NotVisible()
    if share.revoked_at is not None:
        messages.info(request, f"The share with {_recipient(share)} was already revoked: nothing changed.")
    else:
        sharing.revoke(principal=principal, share=share)
        what = "this patient's studies" if share.patient_id else "this study"
        messages.success(request, f"Revoked: {_recipient(share)} no longer sees {what}.")
    return redirect(reverse("study-detail", kwargs={"study_uid": study.study_instance_uid}) + "#shares")
