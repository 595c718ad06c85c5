"""Operator command: register (or update) the DICOM AE title an institution's node uses from a host."""

from subscribers import services
from subscribers.access import OPERATOR
from subscribers.selectors import application_entities_visible_to

from ._operator import OperatorCommand, institution_by_slug, refusals_as_command_errors

SETTINGS = ("port", "can_send", "can_receive", "description", "is_active")


class Command(OperatorCommand):
    help = """Register the DICOM AE title of an institution's scanner, PACS or workstation.

The archive knows a DICOM peer by its calling AE title together with the host it
connects from. --send lets it store images to the archive and query it; --receive
makes it a destination the archive sends studies to (C-MOVE), at --host:--port.
With neither flag it may send only. Safe to run again: an AE title already
registered for this institution from this host is updated to what is given here."""
    examples = """
        manage.py register_ae --institution st-marys --ae-title CT_ROOM1 --host 10.20.0.15 --send
        manage.py register_ae --institution st-marys --ae-title PACS --host pacs.st-marys.example --port 11112 --send --receive
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", required=True, help="slug of the institution the node belongs to")
        parser.add_argument(
            "--ae-title",
            metavar="AET",
            required=True,
            help="the node's calling AE title: 1-16 printable ASCII characters, no backslash, no leading or trailing space",
        )
        parser.add_argument("--host", required=True, help="host name or IP address the node connects from and listens at")
        parser.add_argument("--port", type=int, default=104, help="port the node listens at, for --receive (default 104)")
        parser.add_argument("--send", action="store_true", help="may store images to the archive and query it")
        parser.add_argument("--receive", action="store_true", help="may be sent studies by the archive (C-MOVE destination)")
        parser.add_argument("--description", metavar="TEXT", help='what the node is, e.g. "CT scanner, room 1" (kept if not given)')

    def handle(self, *args, **options):
        institution = institution_by_slug(options["institution"])
        ae_title, host = options["ae_title"], options["host"].strip()
        before = (
            application_entities_visible_to(OPERATOR)
            .filter(institution=institution, ae_title=ae_title, host=host)
            .values(*SETTINGS)
            .first()
        )
        can_send, can_receive = options["send"], options["receive"]
        if not (can_send or can_receive):
            can_send = True
        description = options["description"]
        if description is None:
            description = before["description"] if before else ""
        with refusals_as_command_errors(f"cannot register AE title {ae_title!r}"):
            ae, created = services.register_ae(
                actor=OPERATOR,
                institution=institution,
                ae_title=ae_title,
                host=host,
                port=options["port"],
                can_send=can_send,
                can_receive=can_receive,
                description=description,
            )
        may = " and ".join(word for word, allowed in (("send", ae.can_send), ("receive", ae.can_receive)) if allowed)
        if created:
            self.stdout.write(f"registered AE title {ae} for {institution.slug} (may {may})")
            return
        changed = [field.replace("_", " ") for field in SETTINGS if getattr(ae, field) != before[field]]
        state = f"updated: {', '.join(changed)}" if changed else "unchanged"
        self.stdout.write(f"AE title {ae} of {institution.slug} already registered ({state}; may {may})")
