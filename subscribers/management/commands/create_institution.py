"""Operator command: create a subscriber institution, or update the details of an existing one."""

from subscribers import services
from subscribers.access import OPERATOR
from subscribers.selectors import institutions_visible_to

from ._operator import OperatorCommand, refusals_as_command_errors

DETAILS = ("name", "contact_name", "contact_email", "contact_phone", "address")


class Command(OperatorCommand):
    help = """Create an institution (a subscriber), or update the one that already has this slug.

Safe to run again: an existing institution keeps its status, and only the details
given on this command line change. Suspend or reactivate an institution with
set_institution_status."""
    examples = """
        manage.py create_institution --name "St. Mary's Hospital" --slug st-marys \\
            --contact-name "Ann Lee" --contact-email it@st-marys.example --contact-phone "+44 20 7946 0000"
    """

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help='name shown to people, e.g. "St. Mary\'s Hospital"')
        parser.add_argument(
            "--slug",
            required=True,
            help="short unique key of letters, digits, '-' and '_' (e.g. st-marys); the other commands name the institution by it",
        )
        parser.add_argument("--contact-name", metavar="NAME", help="person to contact at the institution")
        parser.add_argument("--contact-email", metavar="EMAIL", help="contact e-mail address")
        parser.add_argument("--contact-phone", metavar="PHONE", help="contact telephone number")
        parser.add_argument("--address", metavar="TEXT", help="postal address (quote it; may span lines)")

    def handle(self, *args, **options):
        slug = options["slug"]
        before = institutions_visible_to(OPERATOR).filter(slug=slug).values(*DETAILS).first()
        with refusals_as_command_errors(f"cannot create institution {slug!r}"):
            institution, created = services.create_institution(
                actor=OPERATOR,
                name=options["name"],
                slug=slug,
                contact_name=options["contact_name"],
                contact_email=options["contact_email"],
                contact_phone=options["contact_phone"],
                address=options["address"],
            )
        if created:
            self.stdout.write(f"created institution {institution.slug}")
            return
        changed = [field.replace("_", " ") for field in DETAILS if getattr(institution, field) != before[field]]
        self.stdout.write(f"institution {institution.slug} already exists ({'updated: ' + ', '.join(changed) if changed else 'unchanged'})")
