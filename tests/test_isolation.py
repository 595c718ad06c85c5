"""Tenant isolation over every URL: another institution's caller and an anonymous caller never see foreign data.

The routes come from the URL resolver, so endpoints added later are swept without new tests.
"""

import pytest
from django.test import Client

from subscribers.models import ApiToken, ApplicationEntity, Device, Membership
from tests.conftest import login
from tests.isolation import OWNED_OBJECT_BUILDERS, OwnedWorld, body_of, concrete_urls, iter_routes

# Pages an anonymous caller may load: they show no institution's data.
PUBLIC_PREFIXES = ("/accounts/login/", "/healthz", "/static/", "/admin/login/", "/accounts/password_reset", "/viewer")


@pytest.fixture
def world_a(inst_a):
    world = OwnedWorld(institution=inst_a)
    for build in OWNED_OBJECT_BUILDERS:
        build(world)
    return world


def _sweep(client: Client, world: OwnedWorld, *, anonymous: bool, user=None):
    """Return (urls requested, leaks found)."""
    requested, leaks = 0, []
    for route in iter_routes():
        for url in concrete_urls(route, world):
            for method in ("get", "post"):
                response = getattr(client, method)(url, follow=False)
                requested += 1
                if user is not None and "_auth_user_id" not in client.session:
                    login(client, user)  # the sweep posted to log out (or similar): carry on as the same user
                if not 200 <= response.status_code < 300:
                    continue
                if anonymous and not url.startswith(PUBLIC_PREFIXES):
                    leaks.append(f"{method.upper()} {url} -> {response.status_code} for an anonymous caller")
                    continue
                body = body_of(response)
                shown = sorted(m for m in world.markers if m in body)
                if shown:
                    leaks.append(f"{method.upper()} {url} -> {response.status_code} shows {shown}")
    return requested, leaks


def _state(world):
    inst = world.institution
    return (
        sorted(Membership.objects.filter(institution=inst).values_list("pk", "is_active", "is_admin", "can_receive")),
        sorted(ApiToken.objects.filter(institution=inst).values_list("pk", "revoked_at", "expires_at")),
        sorted(ApplicationEntity.objects.filter(institution=inst).values_list("pk", "is_active", "ae_title", "host", "port")),
        sorted(Device.objects.filter(institution=inst).values_list("pk", "is_active", "name")),
    )


def test_user_of_another_institution_sees_no_foreign_data_on_any_url(world_a, admin_b, client):
    before = _state(world_a)
    login(client, admin_b.user)
    requested, leaks = _sweep(client, world_a, anonymous=False, user=admin_b.user)
    assert requested > 50, f"the sweep only reached {requested} URLs"
    assert not leaks, "foreign data shown:\n" + "\n".join(leaks)
    assert _state(world_a) == before, "a request of another institution changed this institution's objects"


def test_anonymous_caller_gets_nothing_on_any_url(world_a, client):
    before = _state(world_a)
    requested, leaks = _sweep(client, world_a, anonymous=True)
    assert requested > 50
    assert not leaks, "served to an anonymous caller:\n" + "\n".join(leaks)
    assert _state(world_a) == before


def test_sweep_would_notice_a_leak(world_a, client):
    """The same sweep as the owner's admin finds the markers: proof that the check above can fail."""
    admin = Membership.objects.get(user__username="zz-alpha-admin")
    login(client, admin.user)
    seen = set()
    for route in iter_routes():
        for url in concrete_urls(route, world_a):
            response = client.get(url)
            if 200 <= response.status_code < 300:
                body = body_of(response)
                seen.update(m for m in world_a.markers if m in body)
    assert {"zz-alpha-clinician", "ZZALPHAAE", "zz-alpha-token-name"} <= seen, f"owner saw only {sorted(seen)}"
