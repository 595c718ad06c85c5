"""Operator command: issue an API token for a member; only the token goes to standard output."""

from django.conf import settings
from django.core.management.base import CommandError

from subscribers import services
from subscribers.access import OPERATOR
from subscribers.selectors import memberships_visible_to

from ._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors


class Command(OperatorCommand):
    help = f"""Issue an API token that acts as a member of an institution, with that member's roles.

Standard output gets the token alone, on one line, so a script can capture it; what
was issued is reported on standard error. The token is shown only this once (only
its hash is kept). Revoke it with revoke_token --prefix PREFIX.
Tokens live {settings.API_TOKEN_DEFAULT_DAYS} days unless --days says otherwise (at most {settings.API_TOKEN_MAX_DAYS})."""
    examples = """
        TOKEN=$(manage.py issue_token --institution st-marys --username pacs --name "PACS STOW-RS" --days 365)
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True, help="slug of the member's institution")
        parser.add_argument("--username", required=True, help="the member the token acts as")
        parser.add_argument("--name", required=True, help='what the token is for, shown in token lists (e.g. "PACS STOW-RS")')
        parser.add_argument(
            "--days",
            type=int,
            help=f"days until the token expires (default {settings.API_TOKEN_DEFAULT_DAYS}, at most {settings.API_TOKEN_MAX_DAYS})",
        )

    def handle(self, *args, **options):
        if options["days"] is not None and options["days"] < 1:
            raise CommandError("--days must be 1 or more")
        institution = institution_by_slug(options["institution"])
        username = options["username"]
        membership = memberships_visible_to(OPERATOR).filter(institution=institution, user__username=username).first()
        if membership is None:
            raise CommandError(f"{username!r} is not a member of institution {institution.slug!r}")
        with refusals_as_command_errors(f"cannot issue a token for {username!r}"):
            token, raw = services.issue_token(actor=OPERATOR, membership=membership, name=options["name"], days=options["days"])
        self.stderr.write(
            f"issued token {token.prefix} ({token.name!r}) for {username} at {institution.slug}, expires {token.expires_at:%Y-%m-%d %H:%M %Z}",
            style_func=str,
        )
        self.stdout.write(raw)
