"""Real-browser fixtures: Debian's chromium driven by Playwright against pytest-django's live_server.

Browser tests live in this folder (importing these fixtures elsewhere would start a second Playwright in the process).
Every request the page makes must go to the live server: anything else is aborted and fails the test
(the portal and the viewer must never need the internet). Screenshots go to the artefacts folder
(`$TEST_ARTIFACTS_DIR`, default `var/test-artifacts`) under `screenshots/`, named by test.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.test import Client

# Playwright's sync API runs an event loop in the test's thread; Django's ORM refuses to run there without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LAPTOP = {"width": 1366, "height": 768}
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or Path(django_settings.BASE_DIR) / "var" / "test-artifacts")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium():
    """One headless chromium per test process (pytest-xdist worker)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: bin/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class OffsiteRequests(list):
    """Requests the page tried to make to anything but the live server (each was aborted)."""


@pytest.fixture
def browser_context(chromium, live_server, request):
    """A fresh browser profile (no cookies) aimed at the live server; fails the test if it tried to leave it."""
    context = chromium.new_context(base_url=live_server.url, viewport=LAPTOP, locale="en-GB", timezone_id="Europe/Berlin")
    context.set_default_timeout(15_000)
    offsite = OffsiteRequests()

    def guard(route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or (parts.hostname or "") in LOCAL_HOSTS:
            route.continue_()
        else:
            offsite.append(url)
            route.abort()

    context.route("**/*", guard)
    context.offsite_requests = offsite
    yield context
    context.close()
    assert not offsite, f"the page tried to reach beyond the local server: {offsite}"


@pytest.fixture
def page(browser_context, request):
    """A page in the fresh context; console errors are kept on page.console_errors for tests to check."""
    page = browser_context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    yield page


def log_in(context, live_server, user) -> None:
    """Give the browser context a logged-in session for user, without the login form (the login test uses the form)."""
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def screenshot(page, name: str, **options) -> Path:
    """Save a screenshot of the page as a test artefact and return its path."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), **options)
    return path
