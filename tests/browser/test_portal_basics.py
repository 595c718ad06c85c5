"""The portal in a real browser: logging in with the form, and a third institution's 'not found'."""

from playwright.sync_api import expect

from tests.factories import TEST_PASSWORD

from .conftest import log_in, screenshot


def test_log_in_with_the_form_lands_on_the_home_page_of_the_institution(page, admin_a):
    page.goto("/accounts/login/")
    screenshot(page, "login")
    page.get_by_label("Username").fill(admin_a.user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("active-institution")).to_have_text("Alpha Hospital")
    screenshot(page, "home")


def test_wrong_password_says_so_and_stays_on_the_form(page, admin_a):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(admin_a.user.username)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("form")).to_contain_text("enter a correct username and password")


def test_a_logged_in_session_can_be_given_to_the_browser(page, browser_context, live_server, clinician_a):
    log_in(browser_context, live_server, clinician_a.user)
    page.goto("/")
    expect(page.get_by_test_id("active-institution")).to_have_text("Alpha Hospital")
