"""Operator command: print a film sheet of an institution's images, to a PDF file or a registered printer."""

import time

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from hardcopy import dicom_print, films, selectors, services, sheet
from subscribers.access import NotVisible, Principal
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors
from subscribers.models import Role

WAIT_SECONDS = 300


class Command(OperatorCommand):
    help = """Print a film sheet of the given images: each UID is a study, series or SOP instance UID of the
institution; their images fill the layout's tiles in order (series, then instance number).

--out writes the PDF; --device sends the job to a registered printer. A print agent's printer
gets the job the next time its agent polls; for a DICOM film printer the command waits for the
printer's answer and exits non-zero with its status when it fails. The job id is printed."""
    examples = """
        manage.py print_film --institution st-marys --layout 4x3 --window 40,400 --out sheet.pdf 1.2.840.113619.2.55.3
        manage.py print_film --institution st-marys --layout 5x4 --film 14INX17IN --device "Dry imager" 1.2.3.4.5
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True)
        parser.add_argument("--layout", metavar="RxC", required=True, help="rows x columns, e.g. 4x3")
        parser.add_argument(
            "--film", metavar="SIZE", default="14INX17IN", help=f"film size: {', '.join(films.FILM_SIZES)} (default 14INX17IN)"
        )
        parser.add_argument("--landscape", action="store_true", help="lay the film sideways")
        parser.add_argument("--window", metavar="C,W", help="window centre and width (default: each image's own)")
        parser.add_argument("--copies", type=int, default=1)
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--out", metavar="FILE.pdf", help="write the sheet to this PDF file")
        where.add_argument("--device", metavar="NAME", help="send the job to this registered printer")
        parser.add_argument("uids", nargs="+", metavar="UID")

    def handle(self, *args, **options):
        institution = institution_by_slug(options["institution"])
        # The operator prints for the institution, with its print role; no other institution's images are visible.
        actor = Principal(kind="operator", institution=institution, roles=frozenset({Role.PRINT, Role.RECEIVE}))
        window = {}
        if options["window"]:
            try:
                center, width = (float(v) for v in options["window"].split(","))
            except ValueError:
                raise CommandError(f"--window {options['window']!r} is not CENTER,WIDTH, e.g. 40,400") from None
            window = {"window_center": center, "window_width": width}
        with refusals_as_command_errors("cannot print"):
            layout = films.parse_layout(options["layout"])
            fmt = services.format_dict(
                name=f"{layout} on {options['film']}",
                film_size=options["film"],
                orientation=films.LANDSCAPE if options["landscape"] else films.PORTRAIT,
                rows=layout.rows,
                columns=layout.columns,
                copies=options["copies"],
                **window,
            )
            printer = None
            if options["device"]:
                printer = selectors.printers_visible_to(actor).filter(device__name=options["device"]).first()
                if printer is None:
                    raise CommandError(f"no printer named {options['device']!r} in {institution.slug}")
            try:
                job = services.create_print_job(actor=actor, fmt=fmt, uids=options["uids"], printer=printer)
            except NotVisible:
                raise CommandError(f"no such study, series or image in {institution.slug}: {' '.join(options['uids'])}") from None
        self.stdout.write(f"print job {job.pk}")
        if options["out"]:
            try:
                data = services.render_pdf(actor=actor, job=job)
            except ValidationError as error:
                raise CommandError(" ".join(error.messages)) from error
            with open(options["out"], "wb") as fh:
                fh.write(data)
            self.stdout.write(f"wrote {options['out']} ({sheet.geometry(fmt).page_width:g} x {sheet.geometry(fmt).page_height:g} in)")
        elif printer.is_dicom:
            job = dicom_print.print_job(job_id=job.pk)
            deadline = time.monotonic() + WAIT_SECONDS
            while job.is_open and time.monotonic() < deadline:  # a worker took it first: wait for its answer
                time.sleep(1)
                job.refresh_from_db()
            if job.state != job.State.PRINTED:
                raise CommandError(f"print job {job.pk} failed: {job.reason}")
            self.stdout.write(f"printed on {printer.target()}")
        else:
            self.stdout.write(f"queued for {printer}; its print agent prints it on its next poll")
