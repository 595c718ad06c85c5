"""Portal sign-in, lockout, password change, log-out and the institution switcher, as a person uses them."""

import pytest
from django.urls import reverse

from subscribers.access import SESSION_INSTITUTION_KEY
from subscribers.forms import NO_ACTIVE_INSTITUTION
from subscribers.models import AuditEvent, Institution
from tests.conftest import login
from tests.factories import TEST_PASSWORD, InstitutionFactory, member


def _log_in(client, username, password=TEST_PASSWORD, **extra):
    return client.post(reverse("login"), {"username": username, "password": password, **extra})


def test_login_lands_on_home_naming_the_institution(client, admin_a):
    response = _log_in(client, "admin_a")
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.session[SESSION_INSTITUTION_KEY] == admin_a.institution_id
    home = client.get(reverse("home"))
    assert home.status_code == 200
    assert "Alpha Hospital" in home.content.decode()


def test_login_starts_in_the_first_active_institution_skipping_suspended_ones(client, inst_a, inst_b):
    suspended = InstitutionFactory(name="Aardvark Imaging", slug="aardvark", status=Institution.Status.SUSPENDED)
    for institution in (inst_b, suspended, inst_a):
        member(institution, "roaming", ["receive"])
    _log_in(client, "roaming")
    assert client.session[SESSION_INSTITUTION_KEY] == inst_a.pk  # Alpha before Beta; Aardvark is suspended


def test_user_of_a_suspended_institution_cannot_log_in(client, clinician_a, inst_a):
    inst_a.status = Institution.Status.SUSPENDED
    inst_a.save()
    response = _log_in(client, "clinician_a")
    assert response.status_code == 200
    assert NO_ACTIVE_INSTITUTION in response.context["form"].non_field_errors()
    assert "_auth_user_id" not in client.session
    refused = AuditEvent.objects.get(action="auth.login_refused")
    assert refused.outcome == AuditEvent.Outcome.DENIED and refused.actor == "clinician_a"


def test_wrong_password_is_a_form_error_and_audited(client, clinician_a):
    response = _log_in(client, "clinician_a", "not-the-password")
    assert response.status_code == 200 and response.context["form"].errors
    assert AuditEvent.objects.filter(action="auth.login_failed", actor="clinician_a").exists()


def test_sixth_attempt_after_five_wrong_passwords_is_locked_out_even_with_the_right_one(client, clinician_a):
    for _ in range(5):
        _log_in(client, "clinician_a", "wrong-password")
    response = _log_in(client, "clinician_a")
    assert response.status_code == 429
    body = response.content.decode()
    assert "Try again in 15 minutes" in body and "administrator" in body
    assert "_auth_user_id" not in client.session


def test_password_change_refuses_a_weak_password_and_accepts_a_good_one(client, clinician_a):
    login(client, clinician_a.user)
    url = reverse("password_change")
    weak = client.post(url, {"old_password": TEST_PASSWORD, "new_password1": "password123", "new_password2": "password123"})
    assert weak.status_code == 200
    assert "too common" in weak.content.decode()
    clinician_a.user.refresh_from_db()
    assert clinician_a.user.check_password(TEST_PASSWORD)

    good = client.post(
        url, {"old_password": TEST_PASSWORD, "new_password1": "violet-harbour-lantern-42", "new_password2": "violet-harbour-lantern-42"}
    )
    assert good.status_code == 302 and good["Location"] == reverse("password_change_done")
    clinician_a.user.refresh_from_db()
    assert clinician_a.user.check_password("violet-harbour-lantern-42")
    assert client.get(reverse("password_change_done")).status_code == 200
    assert AuditEvent.objects.filter(action="user.password_change", actor="clinician_a").exists()


def test_logout_is_a_post_button_that_ends_the_session(client_a):
    home = client_a.get(reverse("home")).content.decode()
    assert f'action="{reverse("logout")}"' in home
    response = client_a.post(reverse("logout"))
    assert response.status_code == 302
    assert client_a.get(reverse("home")).status_code == 302


@pytest.fixture
def roaming(inst_a, inst_b):
    """A radiologist reading for both institutions."""
    m = member(inst_a, "roaming", ["receive"])
    member(inst_b, "roaming", ["receive", "admin"])
    return m.user


def test_switcher_changes_the_active_institution(client, roaming, inst_a, inst_b):
    _log_in(client, "roaming")
    home = client.get(reverse("home")).content.decode()
    assert 'name="institution"' in home and "Beta Clinic" in home
    response = client.post(reverse("switch-institution"), {"institution": inst_b.pk})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.session[SESSION_INSTITUTION_KEY] == inst_b.pk
    assert client.get(reverse("manage-members")).status_code == 200  # admin in Beta only
    event = AuditEvent.objects.get(action="institution.switch")
    assert event.outcome == AuditEvent.Outcome.SUCCESS and event.institution_id == inst_b.pk


def test_forged_institution_id_in_the_switcher_is_404_and_changes_nothing(client, roaming, inst_a):
    foreign = InstitutionFactory(name="Gamma Centre", slug="gamma")
    _log_in(client, "roaming")
    for forged in (foreign.pk, "not-a-number", ""):
        response = client.post(reverse("switch-institution"), {"institution": forged})
        assert response.status_code == 404
        assert client.session[SESSION_INSTITUTION_KEY] == inst_a.pk
    assert AuditEvent.objects.filter(action="institution.switch", outcome=AuditEvent.Outcome.DENIED).count() == 3
    assert "Gamma Centre" not in client.get(reverse("home")).content.decode()


def test_switcher_is_not_shown_to_a_member_of_one_institution(client_a):
    body = client_a.get(reverse("home")).content.decode()
    assert 'name="institution"' not in body
    assert "Alpha Hospital" in body
