"""Fixtures shared by the whole suite: two institutions with members of every role, and logged-in clients."""

import os

os.environ.setdefault("MEDARCHIVE_TESTING", "1")

import pytest  # noqa: E402

from subscribers.access import OPERATOR  # noqa: E402
from tests.factories import ALL_ROLES, TEST_PASSWORD, InstitutionFactory, UserFactory, member, principal_of  # noqa: E402


@pytest.fixture
def operator():
    return OPERATOR


@pytest.fixture
def inst_a(db):
    return InstitutionFactory(name="Alpha Hospital", slug="alpha")


@pytest.fixture
def inst_b(db):
    return InstitutionFactory(name="Beta Clinic", slug="beta")


@pytest.fixture
def admin_a(inst_a):
    return member(inst_a, "admin_a", ALL_ROLES)


@pytest.fixture
def admin_b(inst_b):
    return member(inst_b, "admin_b", ALL_ROLES)


@pytest.fixture
def clinician_a(inst_a):
    return member(inst_a, "clinician_a", ["receive"])


@pytest.fixture
def staff_user(db):
    user = UserFactory(username="provider", is_staff=True)
    return user


@pytest.fixture
def principal_a(admin_a):
    return principal_of(admin_a)


@pytest.fixture
def principal_b(admin_b):
    return principal_of(admin_b)


def login(client, user):
    assert client.login(username=user.username, password=TEST_PASSWORD), f"could not log in {user.username}"
    return client


@pytest.fixture
def client_a(client, admin_a):
    return login(client, admin_a.user)


@pytest.fixture
def client_b(client, admin_b):
    return login(client, admin_b.user)
