"""A backup contract negotiated in two real browsers: provider staff propose, the institution's admin counter-proposes,
staff accept, and both see "Accepted" with the whole history."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from backup.models import Contract

from .conftest import LAPTOP, LOCAL_HOSTS, log_in, screenshot


@pytest.fixture
def admin_context(chromium, live_server):
    """A second browser profile for the institution's admin, held to the live server like the first."""
    context = chromium.new_context(base_url=live_server.url, viewport=LAPTOP, locale="en-GB", timezone_id="Europe/Berlin")
    context.set_default_timeout(15_000)
    offsite = []

    def guard(route):
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob") or (parts.hostname or "") in LOCAL_HOSTS:
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    yield context
    context.close()
    assert not offsite, f"the page tried to reach beyond the local server: {offsite}"


def test_staff_propose_admin_counter_proposes_staff_accept_and_both_see_the_history(
    page, browser_context, admin_context, live_server, staff_user, admin_a, inst_a
):
    # Provider staff propose, with the recommendation beside the form.
    log_in(browser_context, live_server, staff_user)
    page.goto("/backup/contracts/")
    page.get_by_role("link", name="Propose a contract to Alpha Hospital").click()
    expect(page.get_by_test_id("recommendation")).to_contain_text("Recommended:")
    page.get_by_label("Title").fill("Nightly backup")
    page.get_by_label("Message").fill("Our offer: every night at two.")
    screenshot(page, "contract-1-staff-proposes", full_page=True)
    page.get_by_role("button", name="Propose", exact=True).click()
    expect(page.get_by_test_id("contract-status")).to_have_text("Proposed by the provider")
    expect(page.get_by_test_id("whose-turn")).to_have_text("Waiting for Alpha Hospital")
    contract_url = urlsplit(page.url).path

    # The institution's admin, in a browser of their own, answers with a counter-proposal.
    admin_page = admin_context.new_page()
    log_in(admin_context, live_server, admin_a.user)
    admin_page.goto("/backup/contracts/")
    admin_page.get_by_role("link", name="Nightly backup").click()
    expect(admin_page.get_by_test_id("whose-turn")).to_have_text("Your turn to answer")
    admin_page.get_by_role("link", name="Counter-propose…").click()
    expect(admin_page.get_by_label("Rate per point and month")).to_have_value("5.0000")
    admin_page.get_by_label("Backup mode").select_option(label="Per examination")
    admin_page.get_by_label("Rate per point and month").fill("4.0000")
    admin_page.get_by_label("Message").fill("Per study suits us, and a little cheaper.")
    screenshot(admin_page, "contract-2-admin-counter-proposes", full_page=True)
    admin_page.get_by_role("button", name="Send counter-proposal").click()
    expect(admin_page.get_by_test_id("contract-status")).to_have_text("Counter-proposed by the institution")
    expect(admin_page.get_by_test_id("whose-turn")).to_have_text("Waiting for the provider")

    # Staff see the change and accept.
    page.goto(contract_url)
    expect(page.get_by_test_id("whose-turn")).to_have_text("Your turn to answer")
    round_2 = page.get_by_test_id("round-2")
    expect(round_2).to_contain_text("Per study suits us")
    expect(round_2.locator("del")).to_contain_text(["All at a set time", "5.0000 EUR"])
    expect(round_2.locator("ins")).to_contain_text(["Per examination", "4.0000 EUR"])
    page.get_by_label("Message").fill("Agreed.")
    page.get_by_role("button", name="Accept these terms").click()
    expect(page.get_by_test_id("contract-status")).to_have_text("Accepted")
    screenshot(page, "contract-3-staff-accepted", full_page=True)

    # Both sides see the accepted contract and every round.
    admin_page.reload()
    for p in (page, admin_page):
        expect(p.get_by_test_id("contract-status")).to_have_text("Accepted")
        expect(p.get_by_test_id("history").locator("li.round")).to_have_count(3)
        expect(p.get_by_test_id("round-1")).to_contain_text("Our offer: every night at two.")
        expect(p.get_by_test_id("round-3")).to_contain_text("Accepted")
        expect(p.get_by_test_id("round-3")).to_contain_text("Agreed.")
    expect(admin_page.get_by_test_id("current-terms")).to_contain_text("Per examination")
    screenshot(admin_page, "contract-4-admin-sees-accepted", full_page=True)

    contract = Contract.objects.get()
    assert contract.status == "accepted" and contract.runs_allowed
    assert list(contract.rounds.values_list("action", "party")) == [
        ("propose", "provider"),
        ("counter", "institution"),
        ("accept", "provider"),
    ]
    assert not page.console_errors
