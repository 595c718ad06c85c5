"""Demo subscribers for trying medarchive out: two institutions, a login for every role, provider staff, AE titles.

`manage.py seed_demo` runs `seed_subscribers` as its first step. Everything goes through the services as
OPERATOR, so the demo is onboarded and audited like any real subscriber. Passwords are generated, printed
once, and stored nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from . import audit, services
from .access import OPERATOR
from .models import ApplicationEntity, Institution, Membership, Role, User

DEMO_HOST = "127.0.0.1"
PROVIDER_STAFF_USERNAME = "provider"


@dataclass(frozen=True)
class DemoInstitution:
    slug: str
    name: str
    user_prefix: str
    contact_name: str
    contact_phone: str
    address: str
    ae_title: str
    ae_port: int
    ae_can_receive: bool
    ae_description: str


DEMO_INSTITUTIONS = (
    DemoInstitution(
        slug="demo-general",
        name="St. Demo General Hospital",
        user_prefix="general",
        contact_name="Dana Demo",
        contact_phone="+1 555 0100",
        address="1 Demo Road\nDemoville",
        ae_title="DEMO_GEN_CT",
        ae_port=11113,
        ae_can_receive=True,
        ae_description="Demo CT scanner (sends images, receives studies)",
    ),
    DemoInstitution(
        slug="demo-imaging",
        name="Demo Imaging Centre",
        user_prefix="imaging",
        contact_name="Ivo Imaging",
        contact_phone="+1 555 0200",
        address="2 Scanner Street\nDemoville",
        ae_title="DEMO_IMG_MR",
        ae_port=11114,
        ae_can_receive=False,
        ae_description="Demo MR scanner (sends images)",
    ),
)

# One login per role, named for what the person does: <user_prefix>-<suffix>.
DEMO_MEMBERS = (
    ("admin", Role.ADMIN),
    ("clinician", Role.RECEIVE),
    ("tech", Role.REGISTER),
    ("print", Role.PRINT),
    ("software", Role.SOFTWARE),
)


@dataclass
class Login:
    username: str
    where: str
    roles: str
    password: str | None  # None: the user already existed and keeps their password


def demo_usernames() -> list[str]:
    members = [f"{demo.user_prefix}-{suffix}" for demo in DEMO_INSTITUTIONS for suffix, _ in DEMO_MEMBERS]
    return [*members, PROVIDER_STAFF_USERNAME]


def seed_subscribers(stdout, *, reset_passwords: bool = False) -> dict:
    """Create whatever of the demo subscribers is missing and print the logins; safe to run again.

    An existing demo user keeps their password unless reset_passwords. Returns what later seed
    steps build on: {"institutions": {slug: Institution}, "memberships": {username: Membership},
    "application_entities": {ae_title: ApplicationEntity}, "provider_staff": User}.
    """
    institutions: dict[str, Institution] = {}
    memberships: dict[str, Membership] = {}
    application_entities: dict[str, ApplicationEntity] = {}
    logins: list[Login] = []
    with transaction.atomic():
        for demo in DEMO_INSTITUTIONS:
            institution, created = services.create_institution(
                actor=OPERATOR,
                name=demo.name,
                slug=demo.slug,
                contact_name=demo.contact_name,
                contact_email=f"contact@{demo.slug}.example",
                contact_phone=demo.contact_phone,
                address=demo.address,
            )
            _say(stdout, f"created institution {demo.slug} ({demo.name})" if created else f"institution {demo.slug} already exists")
            institutions[demo.slug] = institution
            for suffix, role in DEMO_MEMBERS:
                username = f"{demo.user_prefix}-{suffix}"
                membership, password = services.add_member(
                    actor=OPERATOR,
                    institution=institution,
                    username=username,
                    roles=[role],
                    email=f"{username}@{demo.slug}.example",
                    first_name=demo.user_prefix.title(),
                    last_name=suffix.title(),
                )
                if password is None and reset_passwords:
                    password = _new_password(membership.user)
                memberships[username] = membership
                logins.append(Login(username, demo.slug, role.value, password))
            ae, created = services.register_ae(
                actor=OPERATOR,
                institution=institution,
                ae_title=demo.ae_title,
                host=DEMO_HOST,
                port=demo.ae_port,
                can_send=True,
                can_receive=demo.ae_can_receive,
                description=demo.ae_description,
            )
            _say(stdout, f"registered AE title {ae} for {demo.slug}" if created else f"AE title {ae} already registered for {demo.slug}")
            application_entities[ae.ae_title] = ae
        staff, password = services.create_provider_staff(
            actor=OPERATOR,
            username=PROVIDER_STAFF_USERNAME,
            email=f"{PROVIDER_STAFF_USERNAME}@medarchive.example",
            first_name="Provider",
            last_name="Staff",
        )
        if password is None and reset_passwords:
            password = _new_password(staff)
        logins.append(Login(staff.username, "(every institution)", "provider staff", password))
    # Printed only after the commit, so a password shown is a password that works.
    _print_logins(stdout, logins)
    return {"institutions": institutions, "memberships": memberships, "application_entities": application_entities, "provider_staff": staff}


def _new_password(user: User) -> str:
    # subscribers.services has no password-reset use case yet; until it does, the demo resets its own
    # logins here and audits it the way a service would.
    password = services.generate_password()
    user.set_password(password)
    user.save(update_fields=["password"])
    audit.record(action="user.password_reset", principal=OPERATOR, obj=user)
    return password


def _print_logins(stdout, logins: list[Login]) -> None:
    kept = [login for login in logins if login.password is None]
    rows = [("username", "institution", "roles", "password")]
    rows += [(login.username, login.where, login.roles, login.password or "(already exists, unchanged)") for login in logins]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    _say(stdout, "")
    _say(stdout, "Demo logins. Passwords are shown only now and stored nowhere: note the ones you need.")
    for i, row in enumerate(rows):
        _say(stdout, "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
        if i == 0:
            _say(stdout, "  " + "  ".join("-" * width for width in widths) + "  " + "-" * 16)
    if kept:
        _say(
            stdout,
            f"\n{len(kept)} demo users already existed; their passwords were not changed "
            "(seed_demo --reset-passwords gives them new ones).",
        )


def _say(stdout, line: str) -> None:
    stdout.write(line + "\n")
