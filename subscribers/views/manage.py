"""Institution admin pages: members, API tokens, DICOM AE titles and devices of the active institution.

Every object named by id in a URL is looked up through a scoped selector and `get_visible`, so an id of
another institution answers 404. Services make every change and audit it; their ValidationErrors become
form errors and nothing changes.
"""

from functools import wraps

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from .. import selectors, services
from ..access import get_visible
from ..decorators import admin_required, member_required
from ..forms import AddMemberForm, ApplicationEntityForm, IssueTokenForm, MemberRolesForm, RegisterDeviceForm, add_service_error


def _posted(request):
    """The submitted data, or None on GET (an empty POST is still a submission: all boxes unticked)."""
    return request.POST if request.method == "POST" else None


def _show_once(request, template: str, context: dict):
    """A page carrying a secret (password, token): rendered in the POST's answer, never cached or stored."""
    response = render(request, template, context)
    add_never_cache_headers(response)
    return response


def institution_admin(view):
    """Admin of the active institution (or provider staff acting for one): view(request, principal, institution, ...)."""

    @admin_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        principal = request.principal
        if principal.institution is None:
            return render(request, "subscribers/no_institution.html")
        return view(request, principal, principal.institution, *args, **kwargs)

    return wrapped


def _own(queryset, institution):
    # The manage pages act for the active institution only, also for provider staff whose selectors see all.
    return queryset.filter(institution=institution)


# --- Members ---------------------------------------------------------------------------------------


@institution_admin
def members(request, principal, institution):
    rows = _own(selectors.memberships_visible_to(principal), institution).order_by("user__username")
    return render(request, "subscribers/members.html", {"memberships": rows})


@institution_admin
def member_add(request, principal, institution):
    form = AddMemberForm(_posted(request))
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            membership, password = services.add_member(
                actor=principal,
                institution=institution,
                username=data["username"],
                roles=data["roles"],
                email=data["email"],
                first_name=data["first_name"],
                last_name=data["last_name"],
            )
        except ValidationError as error:
            add_service_error(form, error, form.service_fields)
        else:
            return _show_once(request, "subscribers/member_added.html", {"membership": membership, "password": password})
    return render(request, "subscribers/member_add.html", {"form": form})


@institution_admin
def member_edit(request, principal, institution, pk):
    membership = get_visible(_own(selectors.memberships_visible_to(principal), institution), principal, pk=pk)
    form = MemberRolesForm(_posted(request), initial={"roles": sorted(membership.roles), "is_active": membership.is_active})
    if form.is_bound and form.is_valid():
        try:
            services.set_member_roles(
                actor=principal, membership=membership, roles=form.cleaned_data["roles"], is_active=form.cleaned_data["is_active"]
            )
        except ValidationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Saved the roles of {membership.user.username}.")
            return redirect("manage-members")
    return render(request, "subscribers/member_edit.html", {"form": form, "membership": membership})


# --- API tokens ------------------------------------------------------------------------------------


def _issue(request, form, *, principal, membership, back_url):
    """Issue a token from a valid form; the answer shows the raw token once, or None when the service refused."""
    try:
        token, raw = services.issue_token(
            actor=principal, membership=membership, name=form.cleaned_data["name"], days=form.cleaned_data["days"]
        )
    except ValidationError as error:
        add_service_error(form, error, form.service_fields)
        return None
    return _show_once(request, "subscribers/token_issued.html", {"token": token, "raw_token": raw, "back_url": back_url})


@institution_admin
def tokens(request, principal, institution):
    memberships = _own(selectors.memberships_visible_to(principal), institution).filter(is_active=True).order_by("user__username")
    form = IssueTokenForm(_posted(request), memberships=memberships)
    if form.is_bound and form.is_valid():
        response = _issue(request, form, principal=principal, membership=form.cleaned_data["membership"], back_url=reverse("manage-tokens"))
        if response is not None:
            return response
    rows = _own(selectors.tokens_visible_to(principal), institution).select_related("created_by")
    return render(
        request, "subscribers/tokens.html", {"tokens": rows, "form": form, "revoke_url_name": "manage-token-revoke", "mine": False}
    )


@require_POST
@institution_admin
def token_revoke(request, principal, institution, pk):
    token = get_visible(_own(selectors.tokens_visible_to(principal), institution), principal, pk=pk)
    services.revoke_token(actor=principal, token=token)
    messages.success(request, f"Token {token.name} ({token.prefix}…) is revoked; it no longer works.")
    return redirect("manage-tokens")


def _own_tokens(principal):
    return selectors.tokens_visible_to(principal).filter(membership=principal.membership)


@member_required
def my_tokens(request):
    principal = request.principal
    if principal.membership is None:
        return render(request, "subscribers/no_institution.html")
    form = IssueTokenForm(_posted(request))
    if form.is_bound and form.is_valid():
        response = _issue(request, form, principal=principal, membership=principal.membership, back_url=reverse("my-tokens"))
        if response is not None:
            return response
    rows = _own_tokens(principal).select_related("created_by")
    return render(request, "subscribers/tokens.html", {"tokens": rows, "form": form, "revoke_url_name": "my-token-revoke", "mine": True})


@require_POST
@member_required
def my_token_revoke(request, pk):
    principal = request.principal
    if principal.membership is None:
        return render(request, "subscribers/no_institution.html")
    token = get_visible(_own_tokens(principal), principal, pk=pk)
    services.revoke_token(actor=principal, token=token)
    messages.success(request, f"Token {token.name} ({token.prefix}…) is revoked; it no longer works.")
    return redirect("my-tokens")


# --- DICOM AE titles -------------------------------------------------------------------------------


@institution_admin
def ae_titles(request, principal, institution):
    rows = _own(selectors.application_entities_visible_to(principal), institution)
    return render(request, "subscribers/ae_titles.html", {"application_entities": rows})


def _register_ae(form, *, principal, institution, ae_title, host, activate=True):
    data = form.cleaned_data
    try:
        return services.register_ae(
            actor=principal,
            institution=institution,
            ae_title=ae_title,
            host=host,
            port=data["port"],
            can_send=data["can_send"],
            can_receive=data["can_receive"],
            description=data["description"],
            activate=activate,
        )
    except ValidationError as error:
        add_service_error(form, error, form.service_fields)
        return None, False


@institution_admin
def ae_add(request, principal, institution):
    form = ApplicationEntityForm(_posted(request))
    if form.is_bound and form.is_valid():
        ae, created = _register_ae(
            form, principal=principal, institution=institution, ae_title=form.cleaned_data["ae_title"], host=form.cleaned_data["host"]
        )
        if ae is not None:
            if created:
                messages.success(request, f"Registered AE title {ae}.")
            else:
                messages.info(request, f"{ae.ae_title} from {ae.host} was already registered; its settings are updated and it is active.")
            return redirect("manage-ae-titles")
    return render(request, "subscribers/ae_form.html", {"form": form, "application_entity": None})


@institution_admin
def ae_edit(request, principal, institution, pk):
    ae = get_visible(_own(selectors.application_entities_visible_to(principal), institution), principal, pk=pk)
    initial = {f: getattr(ae, f) for f in ("ae_title", "host", "port", "can_send", "can_receive", "description")}
    form = ApplicationEntityForm(_posted(request), initial=initial, editing=True)
    if form.is_bound and form.is_valid():
        saved, _ = _register_ae(form, principal=principal, institution=institution, ae_title=ae.ae_title, host=ae.host, activate=False)
        if saved is not None:
            messages.success(request, f"Saved AE title {saved}.")
            return redirect("manage-ae-titles")
    return render(request, "subscribers/ae_form.html", {"form": form, "application_entity": ae})


@require_POST
@institution_admin
def ae_set_active(request, principal, institution, pk):
    ae = get_visible(_own(selectors.application_entities_visible_to(principal), institution), principal, pk=pk)
    active = request.POST.get("active") == "1"
    services.set_ae_active(actor=principal, ae=ae, is_active=active)
    messages.success(request, f"AE title {ae} is {'active' if active else 'deactivated: the archive refuses its associations'}.")
    return redirect("manage-ae-titles")


# --- Devices ---------------------------------------------------------------------------------------


@institution_admin
def devices(request, principal, institution):
    rows = _own(selectors.devices_visible_to(principal), institution)
    return render(request, "subscribers/devices.html", {"devices": rows})


@institution_admin
def device_add(request, principal, institution):
    form = RegisterDeviceForm(_posted(request))
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            device, raw = services.register_device(
                actor=principal, institution=institution, name=data["name"], kind=data["kind"], description=data["description"]
            )
        except ValidationError as error:
            add_service_error(form, error, form.service_fields)
        else:
            return _show_once(request, "subscribers/device_registered.html", {"device": device, "raw_token": raw})
    return render(request, "subscribers/device_form.html", {"form": form})


@require_POST
@institution_admin
def device_set_active(request, principal, institution, pk):
    device = get_visible(_own(selectors.devices_visible_to(principal), institution), principal, pk=pk)
    active = request.POST.get("active") == "1"
    services.set_device_active(actor=principal, device=device, is_active=active)
    messages.success(request, f"Device {device.name} is {'active' if active else 'deactivated: its credentials no longer work'}.")
    return redirect("manage-devices")
