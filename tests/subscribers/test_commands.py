"""Operator commands for scripted onboarding (subscribers/management/commands) and manage.py seed_demo."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from subscribers.access import AuthenticationFailed, principal_for_ae, principal_for_token
from subscribers.demo import demo_usernames
from subscribers.models import ApiToken, ApplicationEntity, AuditEvent, Institution, Membership, User
from tests.factories import InstitutionFactory, member

BASE_DIR = Path(__file__).resolve().parents[2]
TOKEN_LINE = re.compile(r"^mda_[0-9a-f]{8}_[A-Za-z0-9_-]+\n$")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # seed_demo hashes a dozen passwords; the production hasher would make these tests slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run(*args, stdin: str | None = None) -> tuple[str, str]:
    """Run a command as the operator would; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    options = {"stdout": out, "stderr": err}
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command(*args, **options)
    return out.getvalue(), err.getvalue()


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (Institution, User, Membership, ApiToken, ApplicationEntity, AuditEvent)}


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def printed_password(out: str, username: str) -> str:
    match = re.search(rf"^password for {re.escape(username)}: (\S+)$", out, re.MULTILINE)
    assert match, f"no password printed for {username} in:\n{out}"
    return match.group(1)


@pytest.fixture
def st_marys(db):
    return InstitutionFactory(name="St. Mary's Hospital", slug="st-marys")


# --- create_institution / set_institution_status ---------------------------------------------------


def test_create_institution_then_rerun_changes_nothing_and_reports_updates(db):
    out, _ = run("create_institution", "--name", "St. Mary's Hospital", "--slug", "st-marys", "--contact-email", "it@st-marys.example")
    assert out == "created institution st-marys\n"
    institution = Institution.objects.get(slug="st-marys")
    assert institution.name == "St. Mary's Hospital" and institution.contact_email == "it@st-marys.example" and institution.is_active
    event = AuditEvent.objects.get(action="institution.create")
    assert event.principal_kind == "operator" and event.actor == "operator (command line)" and event.institution == institution

    before = row_counts()
    out, _ = run("create_institution", "--name", "St. Mary's Hospital", "--slug", "st-marys")
    assert out == "institution st-marys already exists (unchanged)\n"
    assert row_counts() == before

    out, _ = run("create_institution", "--name", "St. Mary's", "--slug", "st-marys", "--contact-phone", "+44 20 7946 0000")
    assert out == "institution st-marys already exists (updated: name, contact phone)\n"
    institution.refresh_from_db()
    assert (institution.name, institution.contact_phone) == ("St. Mary's", "+44 20 7946 0000")
    assert institution.contact_email == "it@st-marys.example"  # not given again, so kept
    assert actions()[-1] == "institution.update"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "Bad", "--slug", "bad slug"], "slug"),
        (["--name", "  ", "--slug", "blank"], "needs a name"),
        (["--name", "Bad", "--slug", "bad", "--contact-email", "not-an-address"], "valid email"),
        (["--slug", "no-name"], "--name"),
    ],
)
def test_create_institution_refuses_bad_input_and_creates_nothing(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_institution", *args)
    assert Institution.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_suspending_an_institution_refuses_its_tokens_until_reactivated(st_marys):
    member(st_marys, "pacs", ["register"])
    raw, _ = run("issue_token", "--institution", "st-marys", "--username", "pacs", "--name", "PACS")
    out, _ = run("set_institution_status", "st-marys", "suspended")
    assert out == "institution st-marys is now suspended\n"
    with pytest.raises(AuthenticationFailed, match="suspended"):
        principal_for_token(raw.strip())
    assert run("set_institution_status", "st-marys", "suspended")[0] == "institution st-marys was already suspended\n"
    run("set_institution_status", "st-marys", "active")
    assert principal_for_token(raw.strip()).institution == st_marys
    assert actions()[-2:] == ["institution.suspended", "institution.active"]


def test_set_institution_status_refuses_unknown_slug_and_status(st_marys):
    with pytest.raises(CommandError, match="no institution with slug 'nowhere'"):
        run("set_institution_status", "nowhere", "suspended")
    with pytest.raises(CommandError, match="invalid choice"):
        run("set_institution_status", "st-marys", "closed")
    st_marys.refresh_from_db()
    assert st_marys.is_active


# --- add_user ---------------------------------------------------------------------------------------


def test_add_user_creates_member_prints_password_once_and_rerun_keeps_it(st_marys):
    out, _ = run("add_user", "--institution", "st-marys", "--username", "aturing", "--email", "a@st-marys.ex", "--roles", "receive,print")
    password = printed_password(out, "aturing")
    assert "added aturing to st-marys with roles: print, receive" in out
    user = User.objects.get(username="aturing")
    assert user.check_password(password) and user.email == "a@st-marys.ex"
    assert Membership.objects.get(user=user, institution=st_marys).roles == {"receive", "print"}
    assert actions() == ["user.create", "membership.create"]
    password_hash = user.password

    before = row_counts()
    out, _ = run("add_user", "--institution", "st-marys", "--username", "aturing", "--roles", "print,receive")
    assert out == "aturing is already a member of st-marys with roles: print, receive (unchanged)\n"
    assert row_counts() == before
    user.refresh_from_db()
    assert user.password == password_hash

    out, _ = run("add_user", "--institution", "st-marys", "--username", "aturing", "--roles", "receive")
    assert out == "aturing is already a member of st-marys; roles now: receive\n"
    assert Membership.objects.get(user=user).roles == {"receive"}
    assert actions()[-1] == "membership.roles"


def test_add_user_to_unknown_institution_is_refused_and_creates_nothing(st_marys):
    before = row_counts()
    with pytest.raises(CommandError, match="no institution with slug 'nowhere'"):
        run("add_user", "--institution", "nowhere", "--username", "aturing", "--roles", "receive")
    assert row_counts() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--institution", "st-marys", "--username", "bob", "--roles", "receive,wizard"], "Unknown role.*wizard.*Known roles: register"),
        (["--institution", "st-marys", "--username", "bob"], "--roles"),
        (["--institution", "st-marys", "--username", "bad name!", "--roles", "receive"], "valid username"),
        (["--username", "bob", "--roles", "receive"], "--institution --staff is required"),
        (["--staff", "--username", "bob", "--roles", "receive"], "provider staff have no institution roles"),
    ],
)
def test_add_user_refuses_bad_arguments_and_creates_nothing(st_marys, args, message):
    with pytest.raises(CommandError, match=message):
        run("add_user", *args)
    assert not User.objects.exists() and not AuditEvent.objects.exists()


def test_add_user_takes_the_password_from_stdin_and_validates_it(st_marys):
    add_pacs = ("add_user", "--institution", "st-marys", "--username", "pacs", "--roles", "register", "--password-stdin")
    with pytest.raises(CommandError, match="too short"):
        run(*add_pacs, stdin="short\n")
    assert not User.objects.filter(username="pacs").exists()

    out, _ = run(*add_pacs, stdin="a-long-pass-phrase-42\n")
    assert "password for" not in out
    assert User.objects.get(username="pacs").check_password("a-long-pass-phrase-42")

    # A scripted re-run is harmless: an existing user's password is never replaced.
    out, err = run(*add_pacs, stdin="another-pass-phrase-43\n")
    assert "already a member" in out and "password is left unchanged" in err
    assert User.objects.get(username="pacs").check_password("a-long-pass-phrase-42")


def test_add_user_staff_creates_provider_staff_without_institution(db):
    out, _ = run("add_user", "--staff", "--username", "jdoe", "--email", "jdoe@provider.example")
    password = printed_password(out, "jdoe")
    user = User.objects.get(username="jdoe")
    assert user.is_provider_staff and user.check_password(password) and not user.memberships.exists()
    assert actions() == ["user.create", "user.provider_staff"]
    assert AuditEvent.objects.get(action="user.provider_staff").actor == "operator (command line)"

    before = row_counts()
    assert run("add_user", "--staff", "--username", "jdoe")[0] == "jdoe is already provider staff\n"
    assert row_counts() == before


def test_add_user_staff_marks_an_existing_user_without_touching_their_password(st_marys):
    user = member(st_marys, "aturing", ["admin"]).user
    password_hash = user.password
    assert run("add_user", "--staff", "--username", "aturing")[0] == "aturing is now provider staff\n"
    user.refresh_from_db()
    assert user.is_staff and user.password == password_hash
    assert actions() == ["user.provider_staff"]


# --- issue_token / revoke_token ---------------------------------------------------------------------


def test_issue_token_prints_only_a_token_that_authenticates_as_the_member(st_marys):
    pacs = member(st_marys, "pacs", ["register"])
    out, err = run("issue_token", "--institution", "st-marys", "--username", "pacs", "--name", "PACS STOW-RS", "--days", "30")
    assert TOKEN_LINE.match(out)
    principal = principal_for_token(out.strip())
    assert principal.user == pacs.user and principal.institution == st_marys and principal.has_role("register")
    token = ApiToken.objects.get()
    assert token.name == "PACS STOW-RS" and f"issued token {token.prefix}" in err
    assert 29 <= (token.expires_at - token.created_at).days <= 30
    assert actions() == ["token.create"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--institution", "nowhere", "--username", "pacs"], "no institution with slug 'nowhere'"),
        (["--institution", "st-marys", "--username", "nobody"], "'nobody' is not a member of institution 'st-marys'"),
        (["--institution", "st-marys", "--username", "pacs", "--days", "0"], "--days must be 1 or more"),
        (["--institution", "st-marys", "--username", "pacs", "--days", "9999"], "at most 730 days"),
        (["--institution", "st-marys", "--username", "pacs", "--days", "soon"], "invalid int value"),
    ],
)
def test_issue_token_refuses_bad_arguments_and_issues_nothing(st_marys, args, message):
    member(st_marys, "pacs", ["register"])
    with pytest.raises(CommandError, match=message):
        run("issue_token", *args, "--name", "script")
    assert not ApiToken.objects.exists() and not AuditEvent.objects.exists()


def test_revoked_token_is_refused_and_revoking_again_is_harmless(st_marys):
    member(st_marys, "pacs", ["register"])
    raw = run("issue_token", "--institution", "st-marys", "--username", "pacs", "--name", "PACS")[0].strip()
    prefix = ApiToken.objects.get().prefix

    out, _ = run("revoke_token", "--prefix", prefix)
    assert out.startswith(f"revoked token {prefix} ")
    with pytest.raises(AuthenticationFailed, match="revoked"):
        principal_for_token(raw)
    assert "was already revoked" in run("revoke_token", "--token", raw)[0]
    assert actions() == ["token.create", "token.revoke"]


def test_revoke_token_by_raw_token_and_unknown_tokens_are_errors(st_marys):
    member(st_marys, "pacs", ["register"])
    raw = run("issue_token", "--institution", "st-marys", "--username", "pacs", "--name", "PACS")[0].strip()
    with pytest.raises(CommandError, match="no token with prefix 'ffffffff'"):
        run("revoke_token", "--prefix", "ffffffff")
    with pytest.raises(CommandError, match="no such token"):
        run("revoke_token", "--token", raw[:-1])
    with pytest.raises(CommandError, match="one of the arguments --prefix --token is required"):
        run("revoke_token")
    principal_for_token(raw)  # still valid after the refused attempts
    assert run("revoke_token", "--token", raw)[0].startswith("revoked token")
    with pytest.raises(AuthenticationFailed):
        principal_for_token(raw)


# --- register_ae ------------------------------------------------------------------------------------


def test_register_ae_defaults_to_send_only_and_rerun_changes_nothing(st_marys):
    ct_room1 = ("register_ae", "--institution", "st-marys", "--ae-title", "CT_ROOM1", "--host", "127.0.0.1")
    out, _ = run(*ct_room1, "--description", "CT 1")
    assert out == "registered AE title CT_ROOM1@127.0.0.1:104 for st-marys (may send)\n"
    principal = principal_for_ae("CT_ROOM1", "127.0.0.1")
    assert principal.institution == st_marys and principal.has_role("register") and not principal.has_role("receive")
    assert actions() == ["ae.create"]

    before = row_counts()
    out, _ = run(*ct_room1)
    assert "already registered (unchanged; may send)" in out
    assert row_counts() == before
    assert ApplicationEntity.objects.get().description == "CT 1"

    out, _ = run(*ct_room1, "--port", "11112", "--send", "--receive")
    assert "updated: port, can receive; may send and receive" in out
    assert principal_for_ae("CT_ROOM1", "127.0.0.1").has_role("receive")
    assert actions()[-1] == "ae.update"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ae-title", "WAY_TOO_LONG_AE_TITLE"], "1 to 16 printable ASCII characters"),
        (["--ae-title", "BACK\\SLASH"], "without backslash"),
        (["--ae-title", "CT", "--port", "70000"], "between 1 and 65535"),
        (["--ae-title", "CT", "--port", "dicom"], "invalid int value"),
    ],
)
def test_register_ae_refuses_bad_input_naming_the_rule(st_marys, args, message):
    with pytest.raises(CommandError, match=message):
        run("register_ae", "--institution", "st-marys", "--host", "127.0.0.1", *args)
    assert not ApplicationEntity.objects.exists() and not AuditEvent.objects.exists()


def test_register_ae_refuses_a_title_and_host_taken_by_another_institution(st_marys):
    run("register_ae", "--institution", "st-marys", "--ae-title", "PACS", "--host", "127.0.0.1")
    InstitutionFactory(slug="other")
    with pytest.raises(CommandError, match="already registered"):
        run("register_ae", "--institution", "other", "--ae-title", "PACS", "--host", "127.0.0.1")
    assert principal_for_ae("PACS", "127.0.0.1").institution == st_marys


# --- seed_demo --------------------------------------------------------------------------------------


def demo_passwords(out: str) -> dict[str, str]:
    """The password column of the printed login table, for the users that got one."""
    found = {}
    for username in demo_usernames():
        match = re.search(rf"^  {re.escape(username)}\s.*\s(\S+)$", out, re.MULTILINE)
        if match and "unchanged" not in match.group(0):
            found[username] = match.group(1)
    return found


def test_seed_demo_creates_the_demo_subscribers_and_prints_working_logins_once(db):
    out, _ = run("seed_demo")
    assert set(Institution.objects.values_list("slug", flat=True)) == {"demo-general", "demo-imaging"}
    passwords = demo_passwords(out)
    assert set(passwords) == set(demo_usernames())
    for username, password in passwords.items():
        assert User.objects.get(username=username).check_password(password), username
    general = Institution.objects.get(slug="demo-general")
    assert Membership.objects.get(user__username="general-clinician").roles == {"receive"}
    assert Membership.objects.get(user__username="general-tech", institution=general).roles == {"register"}
    assert Membership.objects.get(user__username="imaging-admin").roles == {"admin"}
    assert User.objects.get(username="provider").is_provider_staff
    assert principal_for_ae("DEMO_GEN_CT", "127.0.0.1").roles == {"register", "receive"}
    assert principal_for_ae("DEMO_IMG_MR", "127.0.0.1").institution.slug == "demo-imaging"
    # Onboarding is the operator's; the demo backup contracts are negotiated by provider staff and the institution admins.
    onboarding = AuditEvent.objects.exclude(action__startswith="backup.")
    assert onboarding.filter(principal_kind="operator").count() == onboarding.count() > 0
    assert set(AuditEvent.objects.filter(action__startswith="backup.").values_list("principal_kind", flat=True)) == {"user"}


def test_seed_demo_rerun_creates_nothing_and_keeps_passwords_unless_asked(db):
    run("seed_demo")
    hashes = dict(User.objects.values_list("username", "password"))
    before = row_counts()

    out, _ = run("seed_demo")
    assert row_counts() == before
    assert dict(User.objects.values_list("username", "password")) == hashes
    assert demo_passwords(out) == {}
    assert f"{len(demo_usernames())} demo users already existed" in out

    out, _ = run("seed_demo", "--reset-passwords")
    passwords = demo_passwords(out)
    assert set(passwords) == set(demo_usernames())
    assert User.objects.get(username="general-admin").check_password(passwords["general-admin"])
    assert AuditEvent.objects.filter(action="user.password_reset").count() == len(demo_usernames())


def test_seed_demo_refuses_a_production_installation_unless_allowed(db, settings):
    settings.PROFILE = "production"
    with pytest.raises(CommandError, match="--allow-production"):
        run("seed_demo")
    assert not Institution.objects.exists()


# --- As the operator's shell sees them ---------------------------------------------------------------


def manage_py(*args: str) -> subprocess.CompletedProcess:
    """Run manage.py in a child process against this test's database."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        database_url = f"sqlite:///{db['NAME']}"
    else:
        credentials = quote(db["USER"] or "") + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
        database_url = f"postgres://{credentials}@{db['HOST'] or ''}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)


def test_help_explains_the_command_to_an_operator():
    result = manage_py("add_user", "--help")
    assert result.returncode == 0, result.stderr
    for expected in ("--institution SLUG", "--staff", "--roles ROLE,...", "--password-stdin", "register  send images", "examples:"):
        assert expected in result.stdout


@pytest.mark.django_db(transaction=True)
def test_issue_token_stdout_is_exactly_the_token_line_for_a_script():
    member(InstitutionFactory(slug="st-marys"), "pacs", ["register"])
    result = manage_py("issue_token", "--institution", "st-marys", "--username", "pacs", "--name", "PACS")
    assert result.returncode == 0, result.stderr
    assert TOKEN_LINE.match(result.stdout), result.stdout
    assert "issued token" in result.stderr
    assert principal_for_token(result.stdout.strip()).user.username == "pacs"

    refused = manage_py("issue_token", "--institution", "nowhere", "--username", "pacs", "--name", "PACS")
    assert refused.returncode != 0 and refused.stdout == ""
    assert "no institution with slug 'nowhere'" in refused.stderr
