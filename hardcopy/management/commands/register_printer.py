"""Operator command: register a print device of an institution and print its credential once."""

import re

from django.core.management.base import CommandError

from hardcopy import services
from subscribers.access import OPERATOR
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors

DICOM_ADDRESS = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


class Command(OperatorCommand):
    help = """Register a printer of an institution: a film-sheet printer served by a print agent (hot
folder or CUPS queue on the agent's machine) or a DICOM film printer the archive prints to itself.

The printer's credential is printed once, alone on the last line; the print agent needs it
(manage.py print_agent --token). It is stored only as a hash."""
    examples = """
        manage.py register_printer --institution st-marys --name "Film room" --hot-folder /srv/film/in
        manage.py register_printer --institution st-marys --name "Laser 2" --cups LASER_2
        manage.py register_printer --institution st-marys --name "Dry imager" --dicom DRYVIEW@10.20.0.40:104
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True)
        parser.add_argument("--name", required=True, help="what people call the printer")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--dicom", metavar="AET@HOST:PORT", help="a DICOM film printer (Print SCP)")
        where.add_argument("--hot-folder", metavar="PATH", help="folder on the print agent's machine that takes PDF files")
        where.add_argument("--cups", metavar="QUEUE", help="CUPS queue on the print agent's machine")
        parser.add_argument("--film-sizes", metavar="ID,ID", help="film sizes a DICOM printer takes, e.g. 14INX17IN,8INX10IN")

    def handle(self, *args, **options):
        institution = institution_by_slug(options["institution"])
        values = {"hot_folder": options["hot_folder"] or "", "cups_queue": options["cups"] or ""}
        if options["dicom"]:
            match = DICOM_ADDRESS.match(options["dicom"].strip())
            if match is None:
                raise CommandError(f"--dicom {options['dicom']!r} is not AET@HOST:PORT")
            values.update(output="dicom", ae_title=match["aet"], host=match["host"], port=int(match["port"]))
        else:
            values["output"] = "hot_folder" if options["hot_folder"] else "cups"
        if options["film_sizes"]:
            values["film_sizes"] = [s.strip() for s in options["film_sizes"].split(",") if s.strip()]
        with refusals_as_command_errors(f"cannot register printer {options['name']!r}"):
            printer, raw = services.register_printer(actor=OPERATOR, institution=institution, name=options["name"], **values)
        self.stdout.write(f"registered printer {printer.device.name} of {institution.slug} ({printer.target()})")
        self.stdout.write("its credential, shown this once:")
        self.stdout.write(raw)
