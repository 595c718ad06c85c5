"""The device side of a film-sheet printer: polls the server for its jobs and prints them (HTTP only)."""

import time

from django.core.management.base import CommandError

from hardcopy.agent import PrintAgent, ServerRefused
from subscribers.management.commands._operator import OperatorCommand


class Command(OperatorCommand):
    help = """Run a print agent: fetch the jobs sent to this printer, compose each film sheet as a PDF and
put it into a hot folder or send it to a CUPS queue, reporting progress back to the server.

It needs only the server's address and the printer's credential (from register_printer); it
reads nothing but what the server sends it, so it can run on any machine beside the printer."""
    examples = """
        manage.py print_agent --server https://archive.example.org --token mda_... --hot-folder /srv/film/in
        manage.py print_agent --server http://127.0.0.1:8000 --token mda_... --cups LASER_2 --once
    """

    def add_arguments(self, parser):
        parser.add_argument("--server", required=True, metavar="URL", help="the archive's address, e.g. https://archive.example.org")
        parser.add_argument("--token", required=True, help="the printer's credential, as register_printer printed it")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--hot-folder", metavar="DIR", help="write each sheet as print-job-ID.pdf into this folder")
        where.add_argument("--cups", metavar="QUEUE", help="send each sheet to this CUPS queue with lp -d QUEUE")
        parser.add_argument("--once", action="store_true", help="print what is waiting, then exit")
        parser.add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="seconds between polls (default 5)")

    def handle(self, *args, **options):
        agent = PrintAgent(server=options["server"], token=options["token"], hot_folder=options["hot_folder"], cups_queue=options["cups"])
        with agent:
            self.serve(agent, options)

    def serve(self, agent: PrintAgent, options: dict) -> None:
        while True:
            try:
                results = agent.run_once()
            except ServerRefused as refused:
                raise CommandError(f"the server refused this printer: {refused}") from None
            except OSError as error:
                if options["once"]:
                    raise CommandError(f"cannot reach {options['server']}: {error}") from None
                self.stderr.write(f"cannot reach {options['server']}: {error}; trying again")
                results = []
            for result in results:
                detail = result.path or result.reason
                self.stdout.write(f"job {result.job_id}: {result.state}{f' ({detail})' if detail else ''}")
            if options["once"]:
                if any(r.state == "failed" for r in results):
                    raise CommandError("a job failed")
                return
            time.sleep(options["interval"])
