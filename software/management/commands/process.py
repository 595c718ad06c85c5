"""Operator command: run a processing type on images of an institution, wait for the job and print its products."""

import time

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from software import selectors
from software.errors import InvalidParameters, LicenceRefused
from software.models import Delivery, ProcessingJob
from software.processors import registry
from software.services import jobs, runner, saved_queries
from subscribers.access import NotVisible, Principal
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug
from subscribers.models import Role


class Command(OperatorCommand):
    help = """Run a processing type on images of an institution: each UID is a study, series or SOP instance UID of
the institution (all in one study). Prints the job id, waits for the job, then prints the Series Instance UIDs of its
products, one per line. Exits non-zero when the job is refused, fails, partly fails or is cancelled.

The job runs on the Celery worker; --inline runs it in this process instead (with the same limits), for a machine
without a running worker. --list lists the processing types (and, with --institution, whether it is licensed).

--saved-query NAME runs the type on every own study the institution's saved query of that name matches, instead of
UIDs: one job per study, each printed and waited for."""
    examples = """
        manage.py process --list --institution st-marys
        manage.py process --institution st-marys --type mip --param slab_thickness_mm=10 1.2.840.113619.2.55.3.1
        manage.py process --institution st-marys --type deidentify --param retain_dates=true 1.2.840.113619.2.55.3
        manage.py process --institution st-marys --type mip --saved-query "chest CT this week"
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG")
        parser.add_argument("--type", metavar="TYPE", help="processing type id (see --list)")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter (repeat for more)")
        parser.add_argument("--list", action="store_true", help="list the processing types and exit")
        parser.add_argument("--inline", action="store_true", help="run the job in this process, not on the worker")
        parser.add_argument("--push-ae", metavar="AET", help="deliver the products by C-STORE to this receiving AE title")
        parser.add_argument(
            "--timeout", type=int, metavar="SECONDS", help="how long to wait for the worker (default: the job's time limit + 2 min)"
        )
        parser.add_argument("--saved-query", metavar="NAME", help="run on every study this saved query matches (instead of UIDs)")
        parser.add_argument("uids", nargs="*", metavar="UID")

    def handle(self, *args, **options):
        institution = institution_by_slug(options["institution"]) if options["institution"] else None
        principal = Principal(kind="operator", institution=institution, roles=frozenset({Role.SOFTWARE}))
        if options["list"]:
            self._list(principal if institution else None)
            return
        if options["saved_query"] and options["uids"]:
            raise CommandError("give either --saved-query or UIDs, not both")
        if institution is None or not options["type"] or not (options["uids"] or options["saved_query"]):
            raise CommandError("give --institution, --type and at least one UID or --saved-query NAME (or --list)")
        processor = registry.get(options["type"])
        if processor is None:
            try:
                jobs.processor_for(options["type"])
            except ValidationError as error:
                raise CommandError(" ".join(error.messages)) from None
        pairs = {}
        for text in options["param"]:
            name, sep, value = text.partition("=")
            if not sep or not name.strip():
                raise CommandError(f"--param {text!r} is not NAME=VALUE")
            pairs[name.strip()] = value
        push_ae = None
        if options["push_ae"]:
            push_ae = selectors.receiving_aes(principal).filter(ae_title=options["push_ae"]).first()
            if push_ae is None:
                raise CommandError(f"{institution.slug} has no active receiving AE title {options['push_ae']!r}")
        parameters = jobs.coerce_parameters(processor, pairs)
        if options["saved_query"]:
            self._run_saved_query(principal, processor, parameters, push_ae, options)
            return
        try:
            job = jobs.submit_job(
                principal=principal,
                processor_id=processor.id,
                parameters=parameters,
                uids=options["uids"],
                delivery=Delivery.PUSH if push_ae else Delivery.PULL,
                push_ae=push_ae,
                origin=ProcessingJob.Origin.COMMAND,
                queue=not options["inline"],
            )
        except LicenceRefused as refusal:
            raise CommandError(f"refused: {refusal.reason}") from None
        except InvalidParameters as error:
            raise CommandError(error.messages[0]) from None
        except NotVisible:
            raise CommandError(f"no such study, series or image in {institution.slug}: {' '.join(options['uids'])}") from None
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(f"job {job.pk}: {job.processor_name} {job.processor_version}, {job.progress_total} item(s)")
        self._finish(job, options)

    def _run_saved_query(self, principal, processor, parameters, push_ae, options):
        try:
            saved = saved_queries.saved_query_by_name(principal, options["saved_query"])
            run = saved_queries.run_saved_query(
                principal=principal,
                saved_query=saved,
                processor_id=processor.id,
                parameters=parameters,
                delivery=Delivery.PUSH if push_ae else Delivery.PULL,
                push_ae=push_ae,
                origin=ProcessingJob.Origin.COMMAND,
                queue=not options["inline"],
            )
        except LicenceRefused as refusal:
            raise CommandError(f"refused: {refusal.reason}") from None
        except InvalidParameters as error:
            raise CommandError(error.messages[0]) from None
        except NotVisible:
            raise CommandError(f"{principal.institution.slug} has no saved query named {options['saved_query']!r}") from None
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        for study_uid, reason in run.skipped:
            self.stderr.write(f"study {study_uid} skipped: {reason}")
        for job in run.jobs:
            self.stdout.write(
                f"job {job.pk}: {job.processor_name} {job.processor_version}, study {job.study.study_instance_uid}, "
                f"{job.progress_total} item(s)"
            )
        failures = []
        for job in run.jobs:
            try:
                self._finish(job, options)
            except CommandError as error:
                failures.append(str(error))
        if failures:
            raise CommandError("; ".join(failures))

    def _finish(self, job: ProcessingJob, options) -> None:
        """Run (--inline) or wait for the job, print its product series; CommandError unless it succeeded."""
        if options["inline"]:
            runner.run_job(job.pk, in_worker=True)
        job = self._wait(job, options["timeout"] or job.time_limit_seconds + 120)
        for series_uid in job.products.order_by("series_instance_uid").values_list("series_instance_uid", flat=True).distinct():
            self.stdout.write(series_uid)
        for item in job.items.filter(status="failed").order_by("position"):
            self.stderr.write(f"item {item.position + 1} ({item.label}) failed: {item.error}")
        if job.delivery_error:
            self.stderr.write(f"delivery failed: {job.delivery_error}")
        if job.status != ProcessingJob.Status.SUCCEEDED:
            raise CommandError(f"job {job.pk} {job.get_status_display().lower()}: {job.error}")

    def _wait(self, job: ProcessingJob, timeout: int) -> ProcessingJob:
        deadline = time.monotonic() + timeout
        while True:
            job.refresh_from_db()
            if job.is_finished:
                return job
            if time.monotonic() > deadline:
                raise CommandError(
                    f"job {job.pk} is still {job.get_status_display().lower()} after {timeout} s: is the worker running? "
                    "(it goes on there; --inline runs a job in this process)"
                )
            time.sleep(0.5)

    def _list(self, principal):
        rows = selectors.processing_types_for(principal) if principal else None
        refusals = {row["processor"].id: row["refusal"] for row in rows if row["processor"]} if rows else {}
        for processor_id, processor in sorted(registry.available().items()):
            modalities = ",".join(processor.modalities) or "any"
            state = ""
            if principal:
                state = "  licensed" if refusals.get(processor_id) is None else f"  not licensed: {refusals[processor_id]}"
            self.stdout.write(f"{processor_id:<12} {processor.version:<6} {processor.scope:<9} {modalities:<14} {processor.name}{state}")
        for processor_id, broken in sorted(registry.unavailable().items()):
            self.stdout.write(f"{processor_id:<12} unavailable: {broken.reason}")
