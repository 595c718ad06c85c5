"""The settings module is driven by the environment: production refuses unsafe defaults, URLs pick database and broker."""

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

# Everything settings.py reads that the test process itself may have set (CI sets several).
SETTINGS_VARIABLES = {
    "SECRET_KEY",
    "MEDARCHIVE_PROFILE",
    "MEDARCHIVE_DEBUG",
    "MEDARCHIVE_TESTING",
    "MEDARCHIVE_VAR_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_QUEUE",
    "CELERY_BROKER_DIR",
    "ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE",
}

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "user": db.get("USER"), "host": db.get("HOST"), "port": db.get("PORT"),
    "broker_url": settings.CELERY_BROKER_URL, "broker_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "queue": settings.CELERY_TASK_DEFAULT_QUEUE,
}))
"""


@pytest.fixture
def environment(tmp_path):
    """A process environment with none of this test session's settings variables, and a var/ of its own."""
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS_VARIABLES}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for the browser tests in this process; no deployment sets it
    env["MEDARCHIVE_VAR_DIR"] = str(tmp_path)
    return env


def run(argv, env):
    return subprocess.run(argv, env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120)


def manage(*args, env):
    return run([sys.executable, str(settings.BASE_DIR / "manage.py"), *args], env)


def settings_seen_by_a_process(env) -> dict:
    result = run([sys.executable, "-c", PRINT_SETTINGS], {**env, "DJANGO_SETTINGS_MODULE": "medarchive.settings"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def production(environment):
    return {
        **environment,
        "MEDARCHIVE_PROFILE": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "archive.example.org",
        "DJANGO_SETTINGS_MODULE": "medarchive.settings",
    }


def test_production_profile_passes_the_deployment_checks(production):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production)

    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(production):
    del production["SECRET_KEY"]

    result = manage("check", "--deploy", env=production)

    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_database_url_chooses_the_database(environment):
    environment["SECRET_KEY"] = secrets.token_urlsafe(50)
    environment["DATABASE_URL"] = "postgres://archivist@db.example.org:5433/medarchive_prod"

    seen = settings_seen_by_a_process(environment)

    assert seen["engine"] == "django.db.backends.postgresql"
    assert (seen["name"], seen["user"], seen["host"], seen["port"]) == ("medarchive_prod", "archivist", "db.example.org", 5433)


def test_without_database_url_the_database_is_a_sqlite_file_under_the_var_folder(environment, tmp_path):
    environment["SECRET_KEY"] = secrets.token_urlsafe(50)

    seen = settings_seen_by_a_process(environment)

    assert seen["engine"] == "django.db.backends.sqlite3"
    assert seen["name"] == str(tmp_path / "medarchive.sqlite3")


def test_without_redis_url_the_broker_is_a_folder_that_celery_broker_dir_moves(environment, tmp_path):
    environment.update(SECRET_KEY=secrets.token_urlsafe(50), CELERY_BROKER_DIR=str(tmp_path / "elsewhere"))

    seen = settings_seen_by_a_process(environment)

    assert seen["broker_url"] == "filesystem://"
    assert seen["broker_options"]["data_folder_in"] == str(tmp_path / "elsewhere" / "queue")
    assert seen["queue"] == "medarchive"


def test_redis_url_makes_redis_the_broker_on_the_named_queue(environment):
    environment.update(SECRET_KEY=secrets.token_urlsafe(50), REDIS_URL="redis://cache.example.org:6379/3", CELERY_QUEUE="archive-eu")

    seen = settings_seen_by_a_process(environment)

    assert seen["broker_url"] == "redis://cache.example.org:6379/3"
    assert seen["queue"] == "archive-eu"
