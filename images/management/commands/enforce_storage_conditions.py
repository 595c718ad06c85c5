"""Operator command: apply the storage conditions now (what the nightly run does), or show what it would do."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from images.storage_conditions import enforcement
from subscribers.access import OPERATOR
from subscribers.management.commands._operator import OperatorCommand, institution_by_slug
from subscribers.models import Institution
from subscribers.selectors import institutions_visible_to


class Command(OperatorCommand):
    help = """Apply the storage conditions of every active institution (or one) now, as the nightly Celery beat run does.

Deletes studies past their retention whose conditions say so (never under a legal hold, never
before an immutable retention ends), compresses files losslessly where the conditions ask and
the pixels decode identically, and records the data-stored state shown in the portal. Every
deletion and compression is audited. With --dry-run nothing changes: it lists what would be done."""
    examples = """
        manage.py enforce_storage_conditions --dry-run
        manage.py enforce_storage_conditions --institution st-marys
    """

    def add_arguments(self, parser):
        parser.add_argument("--institution", metavar="SLUG", help="only this institution (active or suspended)")
        parser.add_argument("--dry-run", action="store_true", help="change nothing; print what would be done")

    def handle(self, *args, **options):
        if options["institution"]:
            institutions = [institution_by_slug(options["institution"])]
        else:
            institutions = list(institutions_visible_to(OPERATOR).filter(status=Institution.Status.ACTIVE).order_by("slug"))
        dry_run = options["dry_run"]
        problems = 0
        for institution in institutions:
            report = enforcement.enforce(institution=institution, trigger="command", principal=OPERATOR, dry_run=dry_run)
            if report.skipped_reason:
                self.stdout.write(f"{institution.slug}: skipped, {report.skipped_reason}")
                continue
            for line in report.lines:
                self.stdout.write(f"  {line}")
            problems += len(report.problems)
            self.stdout.write(self._summary(report))
        if not institutions:
            self.stdout.write("no active institution")
        if problems:
            raise CommandError(f"{problems} problem(s); see the lines starting with 'problem:'")

    def _summary(self, report: enforcement.RunReport) -> str:
        verb = "would delete" if report.dry_run else "deleted"
        parts = [f"{verb} {report.studies_deleted} stud{'y' if report.studies_deleted == 1 else 'ies'}"]
        if not report.dry_run:
            parts[0] += f" ({report.instances_deleted} instances, {filesizeformat(report.bytes_deleted)})"
        verb = "would compress" if report.dry_run else "compressed"
        parts.append(f"{verb} {report.instances_compressed} instances, saving {filesizeformat(report.bytes_saved)}")
        if report.held_past_retention:
            parts.append(f"{report.held_past_retention} due for deletion but kept (legal hold or refusal)")
        if report.flagged:
            parts.append(f"{report.flagged} past retention, kept and flagged")
        snapshot = report.snapshot
        if snapshot is not None:
            parts.append(
                f"now {snapshot.instances} instances, {filesizeformat(snapshot.bytes_stored)} stored of "
                f"{filesizeformat(snapshot.bytes_received)} received, {snapshot.studies_held} held, "
                f"{snapshot.studies_lacking_backup_copies} lacking backup copies"
            )
        prefix = "dry run, " if report.dry_run else ""
        return f"{report.institution.slug}: {prefix}" + "; ".join(parts)
