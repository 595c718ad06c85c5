"""Run the DICOM listener (Storage SCP and Verification SCP) until Ctrl-C or SIGTERM."""

import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from images.dimse.listener import DEFAULT_MAXIMUM_ASSOCIATIONS, start_listener

logger = logging.getLogger("images.dimse")

# Associations still running at stop get this long to finish their current objects before being aborted;
# serve waits 15 s for its children.
STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = (
        "Run the DICOM listener: accepts C-STORE (every storage SOP class, compressed or not, kept as received) "
        "C-ECHO, C-FIND, C-MOVE and C-GET (Patient and Study Root) from AE titles registered to an institution, "
        "only from the host each is registered for, over what that institution may see; "
        "any other caller is rejected at association (A-ASSOCIATE-RJ, calling AE title not recognized). "
        "The called AE title must be ours unless DICOM_REQUIRE_CALLED_AET is false or --any-called-aet is given. "
        "Logs one line per association. Ctrl-C or SIGTERM stops accepting, lets running associations finish "
        f"for up to {STOP_GRACE_SECONDS} s, then aborts them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--port", type=int, default=settings.DICOM_PORT, help="TCP port to listen on (default: DICOM_PORT, %(default)s)"
        )
        parser.add_argument("--aet", default=settings.DICOM_AET, help="the archive's own AE title (default: DICOM_AET, %(default)s)")
        parser.add_argument(
            "--bind", default="0.0.0.0", help="address to listen on (default: %(default)s, every IPv4 address; :: for IPv6 and IPv4)"
        )
        parser.add_argument(
            "--any-called-aet",
            action="store_true",
            help="accept associations whatever called AE title they use (e.g. dcmtk's default ANY-SCP)",
        )
        parser.add_argument(
            "--max-associations",
            type=int,
            default=DEFAULT_MAXIMUM_ASSOCIATIONS,
            help="simultaneous associations; more are rejected as transient (default: %(default)s)",
        )

    def handle(self, *args, **options):
        require_called_aet = getattr(settings, "DICOM_REQUIRE_CALLED_AET", True) and not options["any_called_aet"]
        connections.close_all()  # this thread only waits; each association thread opens its own connection
        stop = threading.Event()
        received = []

        def request_stop(signum, frame):
            received.append(signal.Signals(signum).name)
            stop.set()

        # Installed before the listener starts, so a stop asked for once it is up is never missed.
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server = self._start(options, require_called_aet=require_called_aet)
            try:
                while not stop.wait(0.5):
                    pass
            finally:
                self._stop(server, reason=received[0] if received else "an error")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @staticmethod
    def _start(options, *, require_called_aet: bool):
        try:
            server = start_listener(
                host=options["bind"],
                port=options["port"],
                ae_title=options["aet"],
                require_called_aet=require_called_aet,
                maximum_associations=options["max_associations"],
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['bind']}:{options['port']}: {exc.strerror or exc}") from None
        except ValueError as exc:  # an AE title pynetdicom refuses
            raise CommandError(str(exc)) from None
        host, port = server.server_address[:2]
        logger.info(
            "DICOM listener: AE %s on %s:%d (%s), up to %d associations",
            options["aet"],
            host,
            port,
            "called AE title must match" if require_called_aet else "any called AE title",
            options["max_associations"],
        )
        return server

    @staticmethod
    def _stop(server, *, reason: str) -> None:
        ae = server.ae
        server.shutdown()  # accept no new association
        if ae.active_associations:
            logger.info(
                "DICOM listener: %s; waiting up to %d s for %d association(s)", reason, STOP_GRACE_SECONDS, len(ae.active_associations)
            )
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.1)
            for assoc in ae.active_associations:
                assoc.abort()
        logger.info("DICOM listener stopped (%s)", reason)
