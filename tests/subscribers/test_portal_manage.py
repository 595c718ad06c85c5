"""Institution admin pages: members, tokens, AE titles and devices, through the portal as an admin uses them."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from subscribers import services
from subscribers.access import OPERATOR
from subscribers.models import ApiToken, ApplicationEntity, AuditEvent, Device, Membership, User
from tests.conftest import login
from tests.factories import ApplicationEntityFactory, DeviceFactory, member


def _api_me(raw_token):
    return Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw_token}")


# --- Members ---------------------------------------------------------------------------------------


def test_admin_adds_a_member_and_sees_the_generated_password_once(client_a, inst_a):
    response = client_a.post(
        reverse("manage-member-add"),
        {"username": "new_tech", "email": "tech@alpha.example", "first_name": "Tess", "last_name": "Tech", "roles": ["register", "print"]},
    )
    assert response.status_code == 200
    password = response.context["password"]
    assert password and password in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    user = User.objects.get(username="new_tech")
    assert user.check_password(password)
    membership = Membership.objects.get(user=user, institution=inst_a)
    assert membership.roles == {"register", "print"}
    members_page = client_a.get(reverse("manage-members")).content.decode()
    assert "new_tech" in members_page and password not in members_page


def test_adding_a_member_with_a_bad_username_is_a_form_error_and_creates_nothing(client_a):
    response = client_a.post(reverse("manage-member-add"), {"username": "no spaces allowed", "roles": ["receive"]})
    assert response.status_code == 200 and response.context["form"].errors["username"]
    assert not User.objects.filter(username="no spaces allowed").exists()


def test_admin_edits_a_members_roles_and_deactivates_them(client_a, clinician_a):
    url = reverse("manage-member-edit", args=[clinician_a.pk])
    assert client_a.get(url).status_code == 200
    response = client_a.post(url, {"roles": ["receive", "print"]})  # "is_active" unticked
    assert response.status_code == 302
    clinician_a.refresh_from_db()
    assert clinician_a.roles == {"receive", "print"} and not clinician_a.is_active
    assert AuditEvent.objects.filter(action="membership.update", object_id=str(clinician_a.pk)).exists()


def test_admin_cannot_remove_their_own_admin_role_and_nothing_changes(client_a, admin_a):
    before = admin_a.roles
    response = client_a.post(reverse("manage-member-edit", args=[admin_a.pk]), {"roles": ["receive"], "is_active": "on"})
    assert response.status_code == 200
    assert "cannot remove your own admin role" in response.content.decode()
    admin_a.refresh_from_db()
    assert admin_a.roles == before


# --- Who may use the manage pages ------------------------------------------------------------------

MANAGE_PAGES = [
    "manage-members",
    "manage-member-add",
    "manage-tokens",
    "manage-ae-titles",
    "manage-ae-add",
    "manage-devices",
    "manage-device-add",
    "audit-log",
]


@pytest.mark.parametrize("url_name", MANAGE_PAGES)
def test_member_without_admin_role_gets_403_naming_the_role(client, clinician_a, url_name):
    login(client, clinician_a.user)
    response = client.get(reverse(url_name))
    assert response.status_code == 403
    assert "Institution admin" in response.content.decode()


def test_anonymous_caller_is_sent_to_log_in(client, db):
    response = client.get(reverse("manage-members"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_provider_staff_without_institution_is_pointed_to_django_admin(client, staff_user):
    login(client, staff_user)
    response = client.get(reverse("manage-members"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "No active institution" in body and reverse("admin:index") in body


# --- Another institution's ids are not found -------------------------------------------------------


@pytest.fixture
def objects_b(admin_b, inst_b):
    token, _ = services.issue_token(actor=OPERATOR, membership=admin_b, name="beta script")
    ae = ApplicationEntityFactory(institution=inst_b, ae_title="BETACT", host="192.0.2.20")
    device = DeviceFactory(institution=inst_b, name="beta printer")
    return {"membership": admin_b, "token": token, "ae": ae, "device": device}


def _state_of_b(inst_b):
    return (
        sorted(Membership.objects.filter(institution=inst_b).values_list("pk", "is_active", "is_admin", "can_receive")),
        sorted(ApiToken.objects.filter(institution=inst_b).values_list("pk", "revoked_at")),
        sorted(ApplicationEntity.objects.filter(institution=inst_b).values_list("pk", "is_active", "port", "description")),
        sorted(Device.objects.filter(institution=inst_b).values_list("pk", "is_active")),
    )


@pytest.mark.parametrize(
    "method, url_name, kind, data",
    [
        ("get", "manage-member-edit", "membership", {}),
        ("post", "manage-member-edit", "membership", {"roles": ["receive"]}),
        ("post", "manage-token-revoke", "token", {}),
        ("post", "my-token-revoke", "token", {}),
        ("get", "manage-ae-edit", "ae", {}),
        ("post", "manage-ae-edit", "ae", {"port": "4242", "can_send": "on", "description": "hijacked"}),
        ("post", "manage-ae-set-active", "ae", {"active": "0"}),
        ("post", "manage-device-set-active", "device", {"active": "0"}),
    ],
)
def test_admin_of_a_gets_404_for_the_ids_of_b_and_nothing_changes(client_a, objects_b, inst_b, method, url_name, kind, data):
    before = _state_of_b(inst_b)
    response = getattr(client_a, method)(reverse(url_name, args=[objects_b[kind].pk]), data)
    assert response.status_code == 404
    assert "it does not exist or you cannot see it" in response.content.decode()
    assert _state_of_b(inst_b) == before


def test_issuing_a_token_for_a_member_of_another_institution_is_refused(client_a, admin_b):
    response = client_a.post(reverse("manage-tokens"), {"membership": admin_b.pk, "name": "sneaky", "days": 30})
    assert response.status_code == 200 and response.context["form"].errors["membership"]
    assert not ApiToken.objects.exists()


# --- Tokens ----------------------------------------------------------------------------------------


def test_issued_token_is_shown_once_authenticates_and_stops_after_revocation(client_a, clinician_a):
    response = client_a.post(reverse("manage-tokens"), {"membership": clinician_a.pk, "name": "worklist script", "days": 30})
    assert response.status_code == 200
    raw = response.context["raw_token"]
    body = response.content.decode()
    assert raw in body and "will not be shown again" in body
    assert "no-store" in response["Cache-Control"]

    me = _api_me(raw)
    assert me.status_code == 200 and me.json()["user"] == "clinician_a" and me.json()["institution"]["slug"] == "alpha"

    listing = client_a.get(reverse("manage-tokens")).content.decode()
    token = ApiToken.objects.get(name="worklist script")
    assert token.prefix in listing and raw not in listing

    assert client_a.post(reverse("manage-token-revoke", args=[token.pk])).status_code == 302
    assert _api_me(raw).status_code == 401
    assert "Revoked" in client_a.get(reverse("manage-tokens")).content.decode()


def test_token_with_too_long_a_life_is_a_form_error(client_a, clinician_a, settings):
    response = client_a.post(
        reverse("manage-tokens"), {"membership": clinician_a.pk, "name": "forever", "days": settings.API_TOKEN_MAX_DAYS + 1}
    )
    assert response.status_code == 200 and response.context["form"].errors["days"]
    assert not ApiToken.objects.exists()


def test_tokens_page_has_an_empty_state(client_a):
    assert "No tokens yet — issue one" in client_a.get(reverse("manage-tokens")).content.decode()


def test_member_issues_and_revokes_their_own_token_without_admin_role(client, clinician_a):
    login(client, clinician_a.user)
    response = client.post(reverse("my-tokens"), {"name": "my script", "days": 7})
    assert response.status_code == 200
    raw = response.context["raw_token"]
    assert _api_me(raw).json()["user"] == "clinician_a"
    token = ApiToken.objects.get(name="my script")
    assert token.membership == clinician_a
    assert client.post(reverse("my-token-revoke", args=[token.pk])).status_code == 302
    assert _api_me(raw).status_code == 401


def test_member_cannot_see_or_revoke_a_colleagues_token(client, clinician_a, admin_a):
    colleague_token, _ = services.issue_token(actor=OPERATOR, membership=admin_a, name="admin's own script")
    login(client, clinician_a.user)
    assert "admin&#x27;s own script" not in client.get(reverse("my-tokens")).content.decode()
    assert client.post(reverse("my-token-revoke", args=[colleague_token.pk])).status_code == 404
    colleague_token.refresh_from_db()
    assert colleague_token.revoked_at is None


# --- AE titles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_title", ["BAD\\TITLE", "SEVENTEEN_CHARS_X", "RÖNTGEN"])
def test_ae_title_form_refuses_a_bad_ae_title_with_a_clear_error(client_a, bad_title):
    response = client_a.post(reverse("manage-ae-add"), {"ae_title": bad_title, "host": "192.0.2.30", "port": 104, "can_send": "on"})
    assert response.status_code == 200
    assert "1 to 16 printable ASCII characters" in " ".join(response.context["form"].errors["ae_title"])
    assert not ApplicationEntity.objects.exists()


def test_ae_title_taken_by_another_institution_is_a_form_error(client_a, inst_b):
    ApplicationEntityFactory(institution=inst_b, ae_title="SHARED", host="192.0.2.40")
    response = client_a.post(reverse("manage-ae-add"), {"ae_title": "SHARED", "host": "192.0.2.40", "port": 104, "can_send": "on"})
    assert response.status_code == 200 and "already registered" in response.content.decode()
    assert ApplicationEntity.objects.count() == 1


def test_admin_adds_edits_and_deactivates_an_ae_title(client_a, inst_a):
    response = client_a.post(reverse("manage-ae-add"), {"ae_title": "CT_ROOM1", "host": "192.0.2.50", "port": 104, "can_send": "on"})
    assert response.status_code == 302
    ae = ApplicationEntity.objects.get(ae_title="CT_ROOM1", institution=inst_a)
    url = reverse("manage-ae-edit", args=[ae.pk])
    assert client_a.get(url).status_code == 200
    response = client_a.post(
        url, {"ae_title": "IGNORED", "host": "ignored", "port": 11112, "can_send": "on", "can_receive": "on", "description": "CT room 1"}
    )
    assert response.status_code == 302
    ae.refresh_from_db()
    assert (ae.ae_title, ae.host, ae.port, ae.can_receive, ae.description) == ("CT_ROOM1", "192.0.2.50", 11112, True, "CT room 1")
    assert client_a.post(reverse("manage-ae-set-active", args=[ae.pk]), {"active": "0"}).status_code == 302
    ae.refresh_from_db()
    assert not ae.is_active
    assert "Deactivated" in client_a.get(reverse("manage-ae-titles")).content.decode()


# --- Devices ---------------------------------------------------------------------------------------


def test_registering_a_device_shows_its_credential_once_and_deactivation_stops_it(client_a, inst_a):
    response = client_a.post(reverse("manage-device-add"), {"name": "film room", "kind": Device.Kind.FILM_PRINTER})
    assert response.status_code == 200
    raw = response.context["raw_token"]
    assert raw in response.content.decode()
    assert _api_me(raw).json()["device"] == "film room"
    device = Device.objects.get(name="film room", institution=inst_a)
    assert raw not in client_a.get(reverse("manage-devices")).content.decode()
    assert client_a.post(reverse("manage-device-set-active", args=[device.pk]), {"active": "0"}).status_code == 302
    assert _api_me(raw).status_code == 401


def test_duplicate_device_name_is_a_form_error(client_a, inst_a):
    DeviceFactory(institution=inst_a, name="film room")
    response = client_a.post(reverse("manage-device-add"), {"name": "film room", "kind": Device.Kind.GATEWAY})
    assert response.status_code == 200 and response.context["form"].errors["name"]
    assert Device.objects.filter(institution=inst_a).count() == 1


def _add_rows(institution, names):
    for name in names:
        m = member(institution, name, ["register"])
        services.issue_token(actor=OPERATOR, membership=m, name=f"{name} script")
        ApplicationEntityFactory(institution=institution)
        DeviceFactory(institution=institution)


@pytest.mark.parametrize("url_name", ["manage-members", "manage-tokens", "manage-ae-titles", "manage-devices"])
def test_list_page_query_count_does_not_grow_with_rows(client_a, inst_a, url_name, django_assert_num_queries):
    _add_rows(inst_a, ["tech0"])
    client_a.get(reverse(url_name))  # the first request of a session may touch it
    with CaptureQueriesContext(connection) as one_row:
        client_a.get(reverse(url_name))
    _add_rows(inst_a, [f"tech{n}" for n in range(1, 8)])
    with django_assert_num_queries(len(one_row.captured_queries)):
        assert client_a.get(reverse(url_name)).status_code == 200
