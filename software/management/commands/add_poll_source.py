"""Operator command: register a polling source of an institution (its PACS or a DICOMweb endpoint) and print its id."""

import os
import re

from django.core.management.base import CommandError

from software.models import Delivery, PollSource
from software.polling import selectors, services
from subscribers.access import OPERATOR
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors

DICOM_ADDRESS = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d{1,5})$")
SECRET_VARIABLE = "MEDARCHIVE_POLL_SECRET"


class Command(OperatorCommand):
    help = f"""Register a polling source of an institution: its own PACS as a DICOM node, or a DICOMweb
endpoint. The server polls it on schedule (Celery beat) for studies matching --match and
--max-age-days, fetches the new ones into the institution's archive, runs the processing
type on each and delivers the products (left to pull, or pushed with --push).

The source's id is printed alone on the last line. A DICOMweb password or bearer token is
read from the environment variable {SECRET_VARIABLE}, never from the command line (where
other users of the machine could read it); with --username it is a password (HTTP basic),
without it a bearer token."""
    examples = """
        manage.py add_poll_source --institution st-marys --dicom PACS@10.20.0.5:104 --type mip --param slab_mm=10 --match Modality=CT --every 15
        manage.py add_poll_source --institution st-marys --dicom PACS@pacs.local:11112 --type deidentify --push PACS --max-age-days 7
        MEDARCHIVE_POLL_SECRET=... manage.py add_poll_source --institution st-marys --dicomweb https://pacs.example.org/dicom-web --type mip
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True)
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--dicom", metavar="AET@HOST:PORT", help="the PACS as a DICOM node (C-FIND, then C-GET or C-MOVE)")
        where.add_argument("--dicomweb", metavar="URL", help="a DICOMweb endpoint (QIDO-RS, then WADO-RS)")
        parser.add_argument("--type", metavar="TYPE", required=True, help="processing type id (manage.py process --list)")
        parser.add_argument("--param", metavar="NAME=VALUE", action="append", default=[], help="a parameter of the type (repeat)")
        parser.add_argument(
            "--match",
            metavar="TAG=VALUE",
            action="append",
            default=[],
            help="collect only studies matching, by keyword or tag, wildcards * and ? allowed (repeat): "
            "Modality, StudyDescription, PatientID, AccessionNumber, ReferringPhysicianName, StudyID, BodyPartExamined, SeriesDescription",
        )
        parser.add_argument("--max-age-days", type=int, metavar="DAYS", help="collect only studies at most this many days old")
        parser.add_argument("--every", type=int, metavar="MINUTES", default=60, help="poll every MINUTES (default 60)")
        parser.add_argument("--name", help="what to call the source (default: its address)")
        parser.add_argument(
            "--retrieve", choices=PollSource.Retrieve.values, default=PollSource.Retrieve.C_GET, help="DICOM node: how to fetch"
        )
        parser.add_argument("--username", help=f"DICOMweb user name (the password is in {SECRET_VARIABLE})")
        parser.add_argument("--push", metavar="AET", help="push the products by C-STORE to this receiving AE title of the institution")

    def handle(self, *args, **options):
        institution = institution_by_slug(options["institution"])
        values = {}
        if options["dicom"]:
            match = DICOM_ADDRESS.match(options["dicom"].strip())
            if match is None:
                raise CommandError(f"--dicom {options['dicom']!r} is not AET@HOST:PORT")
            values.update(kind=PollSource.Kind.DICOM, ae_title=match["aet"], host=match["host"].strip("[]"), port=int(match["port"]))
            values["retrieve"] = options["retrieve"]
        else:
            values.update(kind=PollSource.Kind.DICOMWEB, url=options["dicomweb"], username=options["username"] or "")
            values["secret"] = os.environ.get(SECRET_VARIABLE, "")
        push_ae = None
        if options["push"]:
            receivers = list(selectors.receivers_of(institution).filter(ae_title=options["push"]))
            if not receivers:
                raise CommandError(
                    f"{options['push']!r} is not an active receiving AE title of {institution.slug} (manage.py register_ae --receive)"
                )
            push_ae = receivers[0]
        with refusals_as_command_errors("cannot add the polling source"):
            settings = services.SourceSettings(
                name=options["name"] or "",
                processor_id=options["type"],
                parameters=services.parse_assignments(options["param"]),
                query=services.parse_assignments(options["match"], what="match"),
                max_age_days=options["max_age_days"],
                every_minutes=options["every"],
                delivery=Delivery.PUSH if push_ae else Delivery.PULL,
                push_ae=push_ae,
                **values,
            )
            source = services.add_poll_source(principal=OPERATOR, institution=institution, source=settings)
        self.stdout.write(f"added polling source {source} of {institution.slug}: {source.processor_id} every {source.every_minutes} min")
        self.stdout.write(str(source.pk))
