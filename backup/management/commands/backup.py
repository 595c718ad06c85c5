"""Operator command: back up, verify or restore a backup contract now, in this process (no worker or broker needed)."""

from __future__ import annotations

import os
import sys
import time

from django.core.management.base import CommandError

from backup import selectors
from backup.engine import run as runs
from backup.engine.errors import BackupError, RunAlreadyActive
from backup.engine.progress import Snapshot
from backup.models import BackupRun
from subscribers.access import OPERATOR, NotVisible
from subscribers.management.commands._operator import OperatorCommand, OperatorHelpFormatter

EXIT_FAILED = 1
EXIT_CANNOT_START = 2
EXIT_INTERRUPTED = 130
WAIT_POLL_SECONDS = 2.0


class ProgressDisplay:
    """A redrawn bar on a terminal; on anything else (a log, cron mail) one plain line per phase and per tenth done."""

    width = 30

    def __init__(self, stream, *, tty: bool):
        self.stream, self.tty = stream, tty
        self.phase = None
        self.drawn = 0.0
        self.tenth = -1
        self.started = time.monotonic()

    def __call__(self, snapshot: Snapshot) -> None:
        if snapshot.phase != self.phase:
            self._end_line()
            self.phase, self.tenth, self.started = snapshot.phase, -1, time.monotonic()
            if not self.tty:
                self._write(f"{snapshot.phase}")
        done = snapshot.files_done >= snapshot.files_total
        if self.tty:
            now = time.monotonic()
            if done or now - self.drawn >= 0.1:
                self.drawn = now
                self._bar(snapshot)
            return
        tenth = 10 * snapshot.files_done // max(snapshot.files_total, 1)
        if tenth != self.tenth and snapshot.files_total:
            self.tenth = tenth
            self._write(f"  {self._counts(snapshot)}")

    def _counts(self, s: Snapshot) -> str:
        percent = 100 * s.bytes_done // s.bytes_total if s.bytes_total else 100 * s.files_done // max(s.files_total, 1)
        rate = s.bytes_done / max(time.monotonic() - self.started, 1e-6) / 1e6
        return f"{percent:3d}%  {s.files_done:,}/{s.files_total:,} files  {s.bytes_done / 1e6:,.1f}/{s.bytes_total / 1e6:,.1f} MB  {rate:,.1f} MB/s"

    def _bar(self, s: Snapshot) -> None:
        total = s.bytes_total or s.files_total
        done = s.bytes_done if s.bytes_total else s.files_done
        filled = self.width * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self._counts(s)}", style_func=lambda text: text, ending="")
        self.stream.flush()

    def _write(self, line: str) -> None:
        self.stream.write(line, style_func=lambda text: text)
        self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self.phase is not None:
            self.stream.write("", style_func=lambda text: text)

    def close(self) -> None:
        self._end_line()
        self.phase = None


class Command(OperatorCommand):
    help = f"""Back up, verify or restore a backup contract now, in this process (no Celery worker is needed).

  run      back up the contract's objects: content-addressed blobs and a manifest per object, then a
           verification pass that re-reads what was written; incremental by SHA-256
  verify   re-read every file of the contract's verified sets (or of one set) and check every hash;
           changed or missing files are named and their sets marked damaged
  restore  bring back a study, a patient, an acquiring institution or everything from the latest
           verified sets (or --set), into the archive (matching instances are left alone) or as a zip

The contract must be accepted; only one run of a contract at a time (a second is refused, or with
--wait waits for the first). Progress is a bar on a terminal and plain lines otherwise.

Exit status:
  0  the run is done (and verified)
  {EXIT_FAILED}  the run failed; the message says why (unwritable target, changed files, ...)
  {EXIT_CANNOT_START}  nothing ran: unknown contract, set or object, contract not accepted, run already active
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); an unfinished set is completed by the next run"""
    examples = """
        manage.py backup run --contract 3
        manage.py backup run --contract 3 --object 17 --wait
        manage.py backup verify --contract 3
        manage.py backup verify --contract 3 --set 42
        manage.py backup restore --contract 3 --study 1.2.840.113619.2.55.3.604688
        manage.py backup restore --contract 3 --patient PAT-0042 --zip /tmp/pat-0042.zip
        manage.py backup restore --contract 3 --all --set 40
    """

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{run,verify,restore}", parser_class=type(parser))
        common = {"formatter_class": OperatorHelpFormatter, "called_from_command_line": getattr(parser, "called_from_command_line", None)}

        run = actions.add_parser("run", help="back up the contract now", description="Back up the contract's objects now.", **common)
        run.add_argument("--contract", type=int, required=True, metavar="ID", help="id of the contract (see the portal's contract page)")
        run.add_argument("--object", type=int, action="append", metavar="ID", help="only this object of backup (repeatable)")
        run.add_argument("--wait", action="store_true", help="if a run of the contract is queued or running, wait for it, then run")

        verify = actions.add_parser(
            "verify", help="re-read and check the contract's backup sets", description="Verify backup sets.", **common
        )
        verify.add_argument("--contract", type=int, required=True, metavar="ID", help="id of the contract")
        verify.add_argument(
            "--set", type=int, action="append", dest="sets", metavar="ID", help="only this set (repeatable; any written set)"
        )
        verify.add_argument("--wait", action="store_true", help="wait for a queued or running run of the contract first")

        restore = actions.add_parser(
            "restore", help="restore from the contract's verified sets", description="Restore from backup sets.", **common
        )
        restore.add_argument("--contract", type=int, required=True, metavar="ID", help="id of the contract")
        what = restore.add_mutually_exclusive_group(required=True)
        what.add_argument("--study", metavar="UID", help="one study, by StudyInstanceUID")
        what.add_argument("--patient", metavar="ID", help="one patient, by PatientID (or PatientID|Issuer)")
        what.add_argument("--acquiring-institution", metavar="NAME", help="the images acquired at one institution (DICOM InstitutionName)")
        what.add_argument("--all", action="store_true", help="everything of the contract")
        restore.add_argument(
            "--set", type=int, dest="set_id", metavar="ID", help="restore from this verified set instead of the latest ones"
        )
        restore.add_argument("--zip", metavar="PATH", help="write a zip of the DICOM files to PATH instead of restoring into the archive")
        restore.add_argument("--wait", action="store_true", help="wait for a queued or running run of the contract first")

    def handle(self, *args, action, contract, wait=False, **options):
        try:
            contract = selectors.get_contract(OPERATOR, contract)
        except NotVisible:
            raise CommandError(f"no backup contract {contract}", returncode=EXIT_CANNOT_START) from None
        request = {"run": self._request_backup, "verify": self._request_verify, "restore": self._request_restore}[action]
        run = self._request(request, contract, options, wait=wait)
        self.stdout.write(f"{run.get_kind_display()} {run.pk} of contract {contract.pk} ({contract}, {contract.institution.name})")
        display = ProgressDisplay(self.stderr, tty=self.stderr.isatty())
        try:
            runs.execute(run.pk, listener=display, task_id=f"command:{os.getpid()}")
        except KeyboardInterrupt:
            display.close()
            runs.interrupted(run.pk, "Interrupted by the operator (Ctrl-C); an unfinished set is completed by the next run.")
            self.stderr.write("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        display.close()
        run.refresh_from_db()
        self._summary(run)
        if run.status != BackupRun.Status.DONE:
            sys.exit(EXIT_FAILED)

    def _request(self, request, contract, options, *, wait: bool) -> BackupRun:
        announced = False
        while True:
            try:
                return request(contract, options)
            except RunAlreadyActive as busy:
                if not wait:
                    raise CommandError(f"{busy.message} (or use --wait)", returncode=EXIT_CANNOT_START) from None
                if not announced:
                    self.stderr.write(f"waiting: {busy.message}")
                    announced = True
                time.sleep(WAIT_POLL_SECONDS)
            except BackupError as refusal:
                raise CommandError(refusal.message, returncode=EXIT_CANNOT_START) from None

    def _request_backup(self, contract, options) -> BackupRun:
        return runs.request_backup(
            contract=contract, principal=OPERATOR, object_ids=options.get("object"), trigger="command", enqueue=False
        )

    def _request_verify(self, contract, options) -> BackupRun:
        return runs.request_verify(contract=contract, principal=OPERATOR, set_ids=options.get("sets"), trigger="command", enqueue=False)

    def _request_restore(self, contract, options) -> BackupRun:
        scope, value = "all", ""
        for name in ("study", "patient", "acquiring_institution"):
            if options.get(name):
                scope, value = name, options[name]
        zip_path = options.get("zip") or ""
        if zip_path:
            zip_path = os.path.abspath(zip_path)
            if os.path.exists(zip_path):
                raise BackupError(f"{zip_path} already exists; choose another name")
            if not os.path.isdir(os.path.dirname(zip_path)):
                raise BackupError(f"no such folder: {os.path.dirname(zip_path)}")
        return runs.request_restore(
            contract=contract,
            principal=OPERATOR,
            scope=scope,
            value=value,
            set_id=options.get("set_id"),
            destination="zip" if zip_path else "archive",
            zip_path=zip_path,
            trigger="command",
            enqueue=False,
        )

    def _summary(self, run: BackupRun) -> None:
        elapsed = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else 0.0
        state = "done" if run.status == BackupRun.Status.DONE else "FAILED"
        self.stdout.write(f"{state} in {elapsed:.1f} s: {run.message}")
        result = run.result or {}
        if result.get("sets") and isinstance(result["sets"], list):
            self.stdout.write(f"  sets: {', '.join(str(pk) for pk in result['sets'])}")
        if result.get("zip_path"):
            self.stdout.write(f"  zip: {result['zip_path']} ({result.get('zip_bytes', 0):,} bytes)")
