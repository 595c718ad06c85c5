"""Operator command: import DICOM files from a folder tree or a zip into one institution's archive."""

from __future__ import annotations

import os
import sys
import time

from django.core.management.base import CommandError

from images.errors import IngestRefused
from images.ingest import bulk, check_may_register
from subscribers.access import OPERATOR, principal_for_user
from subscribers.management.commands._operator import OperatorCommand
from subscribers.models import User
from subscribers.selectors import institutions_visible_to

SOURCE = "import"
SHOWN_REASONS = 10
EXIT_REFUSED = 1
EXIT_CANNOT_START = 2


class ProgressBar:
    """A one-line bar on a terminal (files done of all, MB/s), redrawn with a carriage return; silent otherwise."""

    width = 30

    def __init__(self, stream, *, enabled: bool):
        self.stream, self.enabled = stream, enabled
        self.started = time.monotonic()
        self.drawn = 0.0
        self.bytes = 0

    def __call__(self, outcome: bulk.FileOutcome, done: int, total: int) -> None:
        self.bytes += outcome.size
        now = time.monotonic()
        if not self.enabled or (done < total and now - self.drawn < 0.1):
            return
        self.drawn = now
        filled = self.width * done // max(total, 1)
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done:,}/{total:,} files  {self.rate():6.1f} MB/s"
        self.stream.write(line, style_func=lambda text: text, ending="")
        self.stream.flush()

    def rate(self) -> float:
        return self.bytes / max(time.monotonic() - self.started, 1e-6) / 1_000_000

    def close(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("", style_func=lambda text: text)


class Command(OperatorCommand):
    help = f"""Import DICOM files from a folder tree (a DICOM disc, a PACS export) or a zip into an institution's archive.

Every file goes through the same checks as images sent over the network; the same file sent
twice is stored once, so an interrupted import can simply be run again. Files that are not
DICOM images (a DICOMDIR, a README, a zip inside the folder) are refused and listed, and
the rest continue. Symbolic links leading out of the folder are not followed.

The import acts as the service operator registering images for the institution, or with
--as-user as that member (who needs the 'register' role). A progress bar is shown on
standard error when it is a terminal; the summary goes to standard output.

Exit status:
  0  every file was stored or was already stored
  {EXIT_REFUSED}  some files (or the whole zip) were refused; the summary lists the first reasons
  {EXIT_CANNOT_START}  nothing was imported: unknown institution or user, missing path, not allowed"""
    examples = """
        manage.py import_dicom /media/cdrom --institution st-marys
        manage.py import_dicom export.zip --institution st-marys --as-user aturing
    """

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder (read with all its sub-folders) or a .zip file")
        parser.add_argument("--institution", metavar="SLUG", required=True, help="slug of the institution the images belong to")
        parser.add_argument("--as-user", metavar="USERNAME", help="act as this member of the institution instead of the operator")

    def handle(self, *args, path, institution, as_user, **options):
        principal = self._principal(institution, as_user)
        if not os.path.exists(path):
            raise CommandError(f"no such file or folder: {path}", returncode=EXIT_CANNOT_START)
        progress = ProgressBar(self.stderr, enabled=self.stderr.isatty())
        try:
            outcomes = self._import(principal, path, progress)
        except IngestRefused as refusal:  # the zip as a whole: not a zip, too large, too many entries
            progress.close()
            self.stdout.write(f"Refused: {path}: {refusal.reason}")
            sys.exit(EXIT_REFUSED)
        progress.close()
        self._summary(principal, path, outcomes, progress)
        if any(o.refused for o in outcomes):
            sys.exit(EXIT_REFUSED)

    def _principal(self, slug: str, username: str | None):
        institution = institutions_visible_to(OPERATOR).filter(slug=slug).first()
        if institution is None:
            raise CommandError(f"no institution with slug {slug!r}", returncode=EXIT_CANNOT_START)
        if not username:
            principal = bulk.operator_for(institution)
        else:
            user = User.objects.filter(username=username).first()
            principal = principal_for_user(user, institution.pk) if user else None
            if principal is None or principal.institution_id != institution.pk:
                raise CommandError(f"{username!r} is not an active member of {institution.slug!r}", returncode=EXIT_CANNOT_START)
        try:
            check_may_register(principal)
        except IngestRefused as refusal:
            raise CommandError(f"cannot import for {institution.slug!r}: {refusal.reason}", returncode=EXIT_CANNOT_START) from None
        return principal

    def _import(self, principal, path: str, progress: ProgressBar) -> list[bulk.FileOutcome]:
        common = {"principal": principal, "source": SOURCE, "progress": progress}
        if os.path.isdir(path):
            return bulk.ingest_tree(root=path, **common)
        if bulk.looks_like_zip(path, path=path):
            return bulk.ingest_zip(path=path, **common)
        common.pop("progress")
        outcome = bulk.ingest_file(name=os.path.basename(path), path=path, **common)
        progress(outcome, 1, 1)
        return [outcome]

    def _summary(self, principal, path: str, outcomes: list[bulk.FileOutcome], progress: ProgressBar) -> None:
        counts = bulk.count_outcomes(outcomes)
        elapsed = time.monotonic() - progress.started
        institution = principal.institution
        write = self.stdout.write
        write(
            f"Imported {path} into {institution.name} ({institution.slug}): {len(outcomes):,} files in {elapsed:.1f} s ({progress.rate():.1f} MB/s)"
        )
        write(f"  stored          {counts['stored']:>8,}")
        write(f"  already stored  {counts['already_stored']:>8,}")
        if counts["replaced"]:
            write(f"  replaced        {counts['replaced']:>8,}")
        write(f"  refused         {counts['refused']:>8,}")
        refused = [o for o in outcomes if o.refused]
        if refused:
            write("First refusals:")
            for outcome in refused[:SHOWN_REASONS]:
                write(f"  {outcome.name}: {outcome.reason}")
            if len(refused) > SHOWN_REASONS:
                write(f"  ... and {len(refused) - SHOWN_REASONS:,} more")
