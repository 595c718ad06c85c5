"""The audit log page: who may read it, its filters, its pages, and a query count that does not grow."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from subscribers.models import AuditEvent
from tests.conftest import login
from tests.factories import aware


def _event(institution, action, *, outcome="success", actor="admin_a", at=None, **detail):
    return AuditEvent.objects.create(
        action=action, outcome=outcome, actor=actor, institution=institution, at=at or timezone.now(), detail=detail
    )


def _actions(response):
    return [e.action for e in response.context["events"]]


@pytest.fixture
def events(inst_a, inst_b):
    _event(inst_a, "token.create", at=aware(2026, 3, 1, 9, 0))
    _event(inst_a, "token.revoke", at=aware(2026, 3, 2, 23, 30))
    _event(inst_a, "auth.login_failed", outcome="failure", actor="mallory", at=aware(2026, 3, 3, 8, 0))
    _event(inst_b, "token.create", actor="admin_b", at=aware(2026, 3, 2, 10, 0))


def test_admin_sees_only_their_institutions_events(client_a, events):
    response = client_a.get(reverse("audit-log"))
    assert response.status_code == 200
    # The admin's own login (the test client's) is an event of the institution too, and the newest.
    assert _actions(response) == ["auth.login", "auth.login_failed", "token.revoke", "token.create"]
    assert "admin_b" not in response.content.decode()


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"action": "token."}, ["token.revoke", "token.create"]),
        ({"outcome": "failure"}, ["auth.login_failed"]),
        ({"actor": "MALL"}, ["auth.login_failed"]),
        ({"since": "2026-03-02"}, ["auth.login", "auth.login_failed", "token.revoke"]),
        ({"until": "2026-03-02"}, ["token.revoke", "token.create"]),  # the whole last day counts
        ({"since": "2026-03-02", "until": "2026-03-02", "action": "token"}, ["token.revoke"]),
    ],
)
def test_audit_log_filters(client_a, events, params, expected):
    assert _actions(client_a.get(reverse("audit-log"), params)) == expected


def test_invalid_filter_is_shown_and_the_valid_ones_still_apply(client_a, events):
    response = client_a.get(reverse("audit-log"), {"since": "yesterday", "outcome": "failure"})
    assert response.status_code == 200
    assert response.context["form"].errors["since"]
    assert _actions(response) == ["auth.login_failed"]


def test_provider_staff_see_every_institution_and_filter_by_slug(client, staff_user, events):
    login(client, staff_user)
    assert len(_actions(client.get(reverse("audit-log")))) >= 4
    response = client.get(reverse("audit-log"), {"institution": "beta"})
    assert [(e.action, e.actor) for e in response.context["events"]] == [("token.create", "admin_b")]


def test_institution_filter_is_not_offered_to_institution_admins(client_a, events):
    response = client_a.get(reverse("audit-log"), {"institution": "beta"})
    assert "institution" not in response.context["form"].fields
    assert "admin_b" not in response.content.decode()


def test_member_without_admin_role_gets_403_naming_the_role(client, clinician_a):
    login(client, clinician_a.user)
    response = client.get(reverse("audit-log"))
    assert response.status_code == 403
    assert "This needs the &#x27;Institution admin&#x27; role in your institution." in response.content.decode()


def test_audit_log_pages_keep_the_filters(client_a, inst_a):
    start = timezone.now() - timedelta(hours=1)
    for n in range(120):
        _event(inst_a, "token.create", at=start + timedelta(seconds=n), n=n)
    _event(inst_a, "ae.create", at=start)
    response = client_a.get(reverse("audit-log"), {"action": "token."})
    page = response.context["page_obj"]
    assert page.paginator.count == 120 and len(page.object_list) == 50 and page.paginator.num_pages == 3
    body = response.content.decode()
    assert "?action=token.&amp;page=2" in body
    last = client_a.get(reverse("audit-log"), {"action": "token.", "page": 3})
    assert _actions(last) == ["token.create"] * 20


def test_audit_log_query_count_does_not_grow_with_the_number_of_events(client_a, inst_a, django_assert_num_queries):
    for n in range(3):
        _event(inst_a, "token.create", n=n)
    client_a.get(reverse("audit-log"))  # the first request of a session may touch it
    with CaptureQueriesContext(connection) as few:
        client_a.get(reverse("audit-log"))
    for n in range(80):
        _event(inst_a, "membership.update", actor=f"admin{n}", n=n)
    with django_assert_num_queries(len(few.captured_queries)):
        response = client_a.get(reverse("audit-log"))
    assert len(response.context["events"]) == 50
