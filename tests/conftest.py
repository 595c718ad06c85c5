"""Fixtures shared by the whole suite: two institutions with members of every role, and logged-in clients."""

import pytest

from subscribers.access import OPERATOR
from tests.factories import (
    ALL_ROLES,
    TEST_PASSWORD,  # noqa: F401 (re-exported for tests)
    InstitutionFactory,
    UserFactory,
    member,
    principal_of,
)

pytest_plugins = ["tests.worker"]


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
    """Log a test client in without the login form (django-axes needs a request for form logins)."""
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def client_a(client, admin_a):
    return login(client, admin_a.user)


@pytest.fixture
def client_b(client, admin_b):
    return login(client, admin_b.user)


@pytest.fixture(autouse=True)
def _storage_in_tmp(settings, tmp_path):
    """Archive and backup storage in a fresh folder per test (S3 runs override ARCHIVE/BACKUP separately)."""
    stores = dict(settings.STORAGES)
    for alias, folder in (("archive", "archive"), ("backup", "backup")):
        if stores[alias]["BACKEND"].endswith("FileSystemStorage"):
            stores[alias] = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / folder)}}
    settings.STORAGES = stores
    return tmp_path


def stored_files(root) -> list[str]:
    """Every file below root (for 'nothing was left behind' assertions)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
