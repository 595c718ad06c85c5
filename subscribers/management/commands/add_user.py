"""Operator command: add a user to an institution with roles, or create a provider-staff user."""

import getpass
import sys

from django.core.management.base import CommandError

from subscribers import services
from subscribers.access import OPERATOR
from subscribers.models import Institution, Role, User
from subscribers.selectors import memberships_visible_to

from ._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors

ROLE_MEANINGS = {
    Role.REGISTER: "send images to the archive (upload, STOW-RS)",
    Role.RECEIVE: "find, view and download studies",
    Role.SOFTWARE: "run licensed medical software on images",
    Role.PRINT: "print film sheets",
    Role.ADMIN: "manage the institution's users, tokens, AE titles and devices",
}
ROLE_HELP = "\n".join(f"  {role.value:<9} {ROLE_MEANINGS.get(role, role.label)}" for role in Role)


class Command(OperatorCommand):
    help = f"""Add a user to an institution with roles, or create a provider-staff user (--staff).

A new user gets a generated password, printed once here; or pass one on standard
input with --password-stdin. Safe to run again: an existing member's roles are set
to exactly those given, and an existing user's password is never changed.

Roles (--roles, comma-separated):
{ROLE_HELP}"""
    examples = """
        manage.py add_user --institution st-marys --username aturing --email a.turing@st-marys.example --roles receive,print
        printf '%s\\n' "$PASSWORD" | manage.py add_user --institution st-marys --username pacs --roles register --password-stdin
        manage.py add_user --staff --username jdoe --email jdoe@provider.example
    """
    stealth_options = ("stdin",)  # tests pass a stream for the password

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--institution", metavar="SLUG", help="slug of the institution the user is a member of")
        who.add_argument(
            "--staff",
            action="store_true",
            help="make the user provider staff (people of the service operator, who see every institution) instead of a member",
        )
        parser.add_argument("--username", required=True, help="login name (letters, digits and @.+-_)")
        parser.add_argument("--email", default="", help="the user's e-mail address")
        parser.add_argument("--first-name", metavar="NAME", default="", help="given name")
        parser.add_argument("--last-name", metavar="NAME", default="", help="family name")
        parser.add_argument(
            "--roles",
            metavar="ROLE,...",
            help=f"roles in the institution, comma-separated, from: {', '.join(Role.values)} (required with --institution)",
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read a new user's password from standard input (one line) instead of generating one",
        )

    def handle(self, *args, **options):
        self.stdin = options.get("stdin") or sys.stdin
        username = options["username"].strip()
        if options["staff"] and options["roles"] is not None:
            raise CommandError("provider staff have no institution roles; leave out --roles")
        if not options["staff"] and options["roles"] is None:
            raise CommandError("give the member's roles with --roles, e.g. --roles receive,print")
        existing = User.objects.filter(username=username).first()
        password = None
        if options["password_stdin"]:
            if existing is None:
                password = self.read_password(username)
            else:
                self.stderr.write(f"user {username} already exists; their password is left unchanged", style_func=str)
        person = {"username": username, "password": password, **{k: options[k] for k in ("email", "first_name", "last_name")}}
        if options["staff"]:
            generated = self.add_provider_staff(existing, person)
        else:
            generated = self.add_member(existing, institution_by_slug(options["institution"]), options["roles"], person)
        if generated is not None:
            self.stdout.write(f"password for {username}: {generated}")

    def add_provider_staff(self, existing: User | None, person: dict) -> str | None:
        username = person["username"]
        with refusals_as_command_errors(f"cannot make {username!r} provider staff"):
            _, generated = services.create_provider_staff(actor=OPERATOR, **person)
        if existing is None:
            self.stdout.write(f"created provider staff {username}")
        else:
            self.stdout.write(f"{username} {'is already' if existing.is_staff else 'is now'} provider staff")
        return generated

    def add_member(self, existing: User | None, institution: Institution, roles: str, person: dict) -> str | None:
        username, slug = person["username"], institution.slug
        before = memberships_visible_to(OPERATOR).filter(institution=institution, user__username=username).first()
        with refusals_as_command_errors(f"cannot add {username!r} to {slug!r}"):
            membership, generated = services.add_member(actor=OPERATOR, institution=institution, roles=roles, **person)
        if existing is None:
            self.stdout.write(f"created user {username}")
        now = ", ".join(sorted(membership.roles)) or "none"
        if before is None:
            self.stdout.write(f"added {username} to {slug} with roles: {now}")
        elif not before.is_active:
            self.stdout.write(f"{username} is a member of {slug} again, with roles: {now}")
        elif before.roles != membership.roles:
            self.stdout.write(f"{username} is already a member of {slug}; roles now: {now}")
        else:
            self.stdout.write(f"{username} is already a member of {slug} with roles: {now} (unchanged)")
        return generated

    def read_password(self, username: str) -> str:
        if self.stdin.isatty():
            return self.check_given(getpass.getpass(f"password for {username}: "))
        return self.check_given(self.stdin.readline().rstrip("\r\n"))

    @staticmethod
    def check_given(password: str) -> str:
        if not password:
            raise CommandError("--password-stdin: no password on standard input")
        return password
