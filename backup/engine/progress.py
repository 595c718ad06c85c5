"""Progress of a run: counters kept in memory, written to the BackupRun row (with the heartbeat) at most once a second.

A listener (the `backup` command's progress bar) is told of every step; the database only of some, so a run of
100,000 small files does not spend its time writing its own progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from ..models import BackupRun
from . import conf


@dataclass
class Snapshot:
    phase: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


Listener = Callable[[Snapshot], None]


def human_size(size: int) -> str:
    """'29.6 KB', '1.1 GB': sizes in messages people read."""
    return filesizeformat(size).replace("\xa0", " ")


class Progress:
    def __init__(self, run: BackupRun, listener: Listener | None = None):
        self.run = run
        self.listener = listener
        self.phase = ""
        self.files_done = self.files_total = self.bytes_done = self.bytes_total = 0
        self.interval = conf.progress_seconds()
        self.written = 0.0

    def start_phase(self, phase: str, *, files: int, size: int) -> None:
        self.phase = phase
        self.files_done, self.bytes_done = 0, 0
        self.files_total, self.bytes_total = files, size
        self.flush(force=True)

    def advance(self, *, files: int = 1, size: int = 0) -> None:
        self.files_done += files
        self.bytes_done += size
        if self.listener is not None:
            self.listener(self.snapshot())
        if time.monotonic() - self.written >= self.interval:
            self.flush()

    def snapshot(self) -> Snapshot:
        return Snapshot(self.phase, self.files_done, self.files_total, self.bytes_done, self.bytes_total)

    def flush(self, *, force: bool = False) -> None:
        """Write counters, phase and heartbeat to the run row (only while the run is still ours: running)."""
        now = timezone.now()
        BackupRun.objects.filter(pk=self.run.pk, status=BackupRun.Status.RUNNING).update(
            files_done=self.files_done,
            files_total=self.files_total,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            message=self.phase,
            heartbeat_at=now,
        )
        self.written = time.monotonic()
        if force and self.listener is not None:
            self.listener(self.snapshot())
