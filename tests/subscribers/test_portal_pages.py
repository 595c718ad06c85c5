"""Every portal page renders for the people allowed to use it; home, navigation and error pages say what to do."""

import pytest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from medarchive.models import WorkerHeartbeat
from subscribers import services
from subscribers.access import OPERATOR
from subscribers.models import ApplicationEntity
from tests.conftest import login
from tests.factories import ApplicationEntityFactory, DeviceFactory, member


@pytest.fixture
def filled_a(admin_a, clinician_a, inst_a):
    services.issue_token(actor=OPERATOR, membership=clinician_a, name="script")
    ApplicationEntityFactory(institution=inst_a, ae_title="CT01")
    DeviceFactory(institution=inst_a, name="film room")
    return inst_a


ADMIN_PAGES = [
    "home",
    "password_change",
    "password_change_done",
    "my-tokens",
    "manage-members",
    "manage-member-add",
    "manage-tokens",
    "manage-ae-titles",
    "manage-ae-add",
    "manage-devices",
    "manage-device-add",
    "audit-log",
]


def test_every_page_renders_for_an_institution_admin(client_a, filled_a, admin_a, clinician_a):
    urls = [reverse(name) for name in ADMIN_PAGES]
    urls += [reverse("manage-member-edit", args=[clinician_a.pk]), reverse("manage-ae-edit", args=[ApplicationEntity.objects.get().pk])]
    for url in urls:
        response = client_a.get(url)
        assert response.status_code == 200, url
        assert "Alpha Hospital" in response.content.decode(), f"{url} does not name the active institution"


@pytest.mark.parametrize("url_name", ["home", "my-tokens", "password_change"])
def test_member_pages_render_for_a_member_without_admin_role(client, clinician_a, url_name):
    login(client, clinician_a.user)
    assert client.get(reverse(url_name)).status_code == 200


@pytest.mark.parametrize("url_name", ["home", "audit-log", "worker-status", "password_change"])
def test_provider_pages_render_for_provider_staff(client, staff_user, inst_a, url_name):
    login(client, staff_user)
    assert client.get(reverse(url_name)).status_code == 200


def test_login_and_locked_out_pages_render_for_anyone(client, db):
    assert client.get(reverse("login")).status_code == 200
    body = render_to_string("registration/locked_out.html", {"failure_limit": 5, "cooloff_timedelta": timezone.timedelta(minutes=15)})
    assert "Try again in 15 minutes" in body and "administrator" in body


def test_home_of_a_print_member_links_to_print_jobs_and_nothing_of_admins(client, inst_a):
    printer = member(inst_a, "printer_a", ["print"])
    login(client, printer.user)
    body = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("print-jobs")}"' in body
    assert reverse("manage-members") not in body and reverse("audit-log") not in body  # not in cards, not in navigation
    assert reverse("my-tokens") in body


def test_clinician_home_links_to_the_studies_list(client, clinician_a):
    login(client, clinician_a.user)
    assert 'href="/studies/"' in client.get(reverse("home")).content.decode()


def test_home_of_an_admin_links_to_the_manage_pages(client_a):
    body = client_a.get(reverse("home")).content.decode()
    for name in ("manage-members", "manage-tokens", "manage-ae-titles", "manage-devices", "audit-log"):
        assert f'href="{reverse(name)}"' in body
    assert "Upload" in body and reverse("worker-status") not in body


def test_home_of_provider_staff_lists_institutions_with_status_and_provider_links(client, staff_user, inst_a, inst_b):
    inst_b.status = "suspended"
    inst_b.save()
    login(client, staff_user)
    body = client.get(reverse("home")).content.decode()
    assert "Alpha Hospital" in body and "Beta Clinic" in body and "Suspended" in body
    for url in (reverse("admin:index"), reverse("audit-log"), reverse("worker-status")):
        assert f'href="{url}"' in body


def test_worker_status_shows_heartbeats_or_says_none_has_reported(client, staff_user):
    login(client, staff_user)
    assert "No worker has reported yet" in client.get(reverse("worker-status")).content.decode()
    WorkerHeartbeat.objects.create(worker="celery@web1", broker="filesystem", beats=42, last_seen=timezone.now())
    body = client.get(reverse("worker-status")).content.decode()
    assert "celery@web1" in body and "filesystem" in body and "42" in body


def test_worker_status_is_for_provider_staff_only(client_a):
    response = client_a.get(reverse("worker-status"))
    assert response.status_code == 403 and "This is for provider staff." in response.content.decode()


def test_not_found_page_says_it_does_not_exist_or_cannot_be_seen(client_a):
    response = client_a.get("/manage/members/999999/")
    assert response.status_code == 404
    assert "Not found — it does not exist or you cannot see it" in response.content.decode()


def test_server_error_page_renders_without_a_request(db):
    assert "Something went wrong" in render_to_string("500.html")


def test_stylesheet_is_served_from_our_own_static_files(client_a):
    body = client_a.get(reverse("home")).content.decode()
    assert '/static/css/portal.css"' in body
    assert "http://" not in body and "https://" not in body


def test_home_and_navigation_link_to_the_upload_page_for_register_role(client_a):
    page = client_a.get("/").content.decode()
    assert 'href="/upload/"' in page


def test_clinician_without_register_role_gets_no_upload_link(client, clinician_a):
    from tests.conftest import login

    login(client, clinician_a.user)
    assert 'href="/upload/"' not in client.get("/").content.decode()
