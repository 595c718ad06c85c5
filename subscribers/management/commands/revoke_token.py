"""Operator command: revoke an API token at once, named by its prefix or by the token itself."""

from django.core.management.base import CommandError

from subscribers import services
from subscribers.access import OPERATOR, hash_token
from subscribers.selectors import tokens_visible_to

from ._operator import OperatorCommand, refusals_as_command_errors


class Command(OperatorCommand):
    help = """Revoke an API token at once; every later request with it is refused.

Name the token by its prefix (the 8 characters after "mda_", shown in token lists
and by issue_token) or by the whole token. Revoking a revoked token is harmless."""
    examples = """
        manage.py revoke_token --prefix 3f9a0c1e
        manage.py revoke_token --token "$TOKEN"
    """

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--prefix", help="the token's public prefix, e.g. 3f9a0c1e")
        which.add_argument("--token", metavar="RAW", help="the whole token (mda_...); it lands in the shell history, so prefer --prefix")

    def handle(self, *args, **options):
        tokens = tokens_visible_to(OPERATOR)
        if options["prefix"] is not None:
            prefix = options["prefix"].strip().rstrip("…").removeprefix("mda_")
            matches = list(tokens.filter(prefix=prefix)[:2])
            if not matches:
                raise CommandError(f"no token with prefix {prefix!r}")
            if len(matches) > 1:
                raise CommandError(f"more than one token has prefix {prefix!r}; revoke it with --token instead")
            token = matches[0]
        else:
            token = tokens.filter(token_hash=hash_token(options["token"].strip())).first()
            if token is None:
                raise CommandError("no such token (check that it was copied whole)")
        owner = token.membership.user.username if token.membership_id else f"device {token.device.name}"
        described = f"token {token.prefix} ({token.name!r}, {owner} at {token.institution.slug})"
        if token.revoked_at is not None:
            self.stdout.write(f"{described} was already revoked on {token.revoked_at:%Y-%m-%d %H:%M %Z}")
            return
        with refusals_as_command_errors(f"cannot revoke token {token.prefix}"):
            services.revoke_token(actor=OPERATOR, token=token)
        self.stdout.write(f"revoked {described}")
