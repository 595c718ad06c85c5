"""Operator command: license an institution for a software of the catalogue (idempotent)."""

from datetime import date

from django.core.management.base import CommandError

from software.models import Software
from software.services import catalogue, licences
from subscribers.access import OPERATOR
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Command(OperatorCommand):
    help = """License an institution for a software of the catalogue, from today (or --from) until --until, with an
optional usage quota (jobs and downloads) and seats (distinct users). --software is the catalogue id, or the id of a
processing type of this server (its catalogue entry is made when missing). Running it again with the same terms
changes nothing; other terms update the licence (and lift a revocation)."""
    examples = """
        manage.py grant_licence --institution st-marys --software mip
        manage.py grant_licence --institution st-marys --software 7 --until 2027-12-31 --quota 500
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True)
        parser.add_argument("--software", metavar="ID", required=True, help="catalogue id, or processing type id (e.g. mip)")
        parser.add_argument("--from", dest="valid_from", metavar="YYYY-MM-DD", help="first day (default: today)")
        parser.add_argument("--until", metavar="YYYY-MM-DD", help="last day (default: no end)")
        parser.add_argument("--quota", type=int, metavar="N", help="uses allowed (default: no limit)")
        parser.add_argument("--seats", type=int, metavar="N", help="distinct users (default: any number)")

    def handle(self, *args, **options):
        institution = institution_by_slug(options["institution"])
        with refusals_as_command_errors("cannot grant the licence"):
            key = options["software"].strip()
            if key.isdigit():
                software = Software.objects.filter(pk=int(key)).first()
                if software is None:
                    raise CommandError(f"no software with id {key} in the catalogue")
            else:
                software = catalogue.ensure_processor_software(actor=OPERATOR, processor_id=key)
            before = licences.licence_of(institution, software)
            snapshot = (
                None if before is None else (before.valid_from, before.valid_until, before.usage_quota, before.seats, before.revoked_at)
            )
            licence, created = licences.grant_licence(
                actor=OPERATOR,
                institution=institution,
                software=software,
                valid_from=_date(options["valid_from"]) if options["valid_from"] else None,
                valid_until=_date(options["until"]) if options["until"] else None,
                usage_quota=options["quota"],
                seats=options["seats"],
            )
        after = (licence.valid_from, licence.valid_until, licence.usage_quota, licence.seats, licence.revoked_at)
        state = "granted" if created else "unchanged" if after == snapshot else "updated"
        until = licence.valid_until.isoformat() if licence.valid_until else "no end"
        quota = f"{licence.used_count} of {licence.usage_quota} uses" if licence.usage_quota else "no usage limit"
        self.stdout.write(
            f"licence {licence.pk} {state}: {institution.slug} for {software.name} (software {software.pk}), "
            f"{licence.valid_from.isoformat()} to {until}, {quota}, {licence.seats or 'any number of'} seats"
        )
