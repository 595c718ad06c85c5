"""Operator command: poll the sources that are due (or all, or one) at once and print what each poll found."""

from django.core.management.base import CommandError
from django.utils import timezone

from software.models import PollRun
from software.polling import selectors, services
from subscribers.access import OPERATOR
from subscribers.management.commands._operator import OperatorCommand

EXIT_FAILED = 1


class Command(OperatorCommand):
    help = """Poll polling sources now, in this process, and print what each poll found, fetched and
processed. Without --now only the sources that are due are polled (what Celery beat's
dispatcher would start this minute); with --now every active source is; --source polls
that one whatever its schedule. The processing jobs started are queued for the worker.
Exits 1 when a poll failed (the reason is printed and kept on the source)."""
    examples = """
        manage.py poll_sources
        manage.py poll_sources --now
        manage.py poll_sources --source 3
    """

    def add_arguments(self, parser):
        parser.add_argument("--now", action="store_true", help="poll every active source, due or not")
        parser.add_argument("--source", type=int, metavar="ID", help="poll this source only (its id from add_poll_source)")

    def handle(self, *args, **options):
        sources = selectors.poll_sources_visible_to(OPERATOR)
        if options["source"] is not None:
            source = sources.filter(pk=options["source"]).first()
            if source is None:
                raise CommandError(f"no polling source with id {options['source']}")
            if not source.is_active:
                raise CommandError(f"polling source {source.pk} ({source.name}) is off")
            if not source.institution.is_active:
                raise CommandError(f"the institution of polling source {source.pk} is suspended")
            ids = [source.pk]
        elif options["now"]:
            ids = list(sources.filter(is_active=True, institution__status="active").order_by("pk").values_list("pk", flat=True))
        else:
            ids = services.claim_due_sources(timezone.now())
        if not ids:
            self.stdout.write("no polling source is due" if not options["now"] else "no active polling source")
            return
        failed = 0
        for source_id in ids:
            run = services.poll_source(source_id=source_id)
            if run is None:
                continue
            source = run.source
            line = f"source {source.pk} ({source.name}): found {run.found}, fetched {run.fetched}, processed {run.processed}, failed {run.failed}"
            if run.status == PollRun.Status.FAILED:
                failed += 1
                line += f"; the poll failed: {run.error}; next try {timezone.localtime(source.next_poll_at):%Y-%m-%d %H:%M}"
            elif run.error:
                line += f"; {run.error}"
            self.stdout.write(line)
        if failed:
            raise CommandError(f"{failed} of {len(ids)} poll(s) failed", returncode=EXIT_FAILED)
