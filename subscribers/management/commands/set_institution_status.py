"""Operator command: suspend an institution, or make it active again."""

from subscribers import services
from subscribers.access import OPERATOR
from subscribers.models import Institution

from ._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors


class Command(OperatorCommand):
    help = """Suspend an institution, or make a suspended one active again.

While an institution is suspended its users cannot log in through it, and its API
tokens, DICOM AE titles and devices are refused. Nothing is deleted: making it
active again restores every access as it was."""
    examples = """
        manage.py set_institution_status st-marys suspended
        manage.py set_institution_status st-marys active
    """

    def add_arguments(self, parser):
        parser.add_argument("slug", metavar="SLUG", help="the institution's slug")
        parser.add_argument("status", metavar="STATUS", choices=Institution.Status.values, help="the new status: active or suspended")

    def handle(self, *args, **options):
        institution = institution_by_slug(options["slug"])
        status = options["status"]
        was = institution.status
        with refusals_as_command_errors(f"cannot change the status of {institution.slug!r}"):
            services.set_institution_status(actor=OPERATOR, institution=institution, status=status)
        if was == status:
            self.stdout.write(f"institution {institution.slug} was already {status}")
        else:
            self.stdout.write(f"institution {institution.slug} is now {status}")
