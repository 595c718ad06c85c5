"""What every kind of polling source answers (studies found, instances retrieved) and how a poll fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class PollFailed(Exception):
    """The source could not be asked, or answered something we cannot use: the whole poll fails with `reason`, which
    names the source and what went wrong, for the institution's admin."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FetchFailed(Exception):
    """One study could not be fetched or processed (the poll goes on with the others); `reason` in words. A final one
    (the processing refuses the study) is not tried again at the next poll."""

    def __init__(self, reason: str, *, final: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.final = final


@dataclass
class FoundStudy:
    """A study a source offered, with what it answered about it."""

    study_instance_uid: str
    study_date: str = ""
    study_description: str = ""
    patient_id: str = ""
    modalities: list[str] = field(default_factory=list)
    number_of_instances: int | None = None


@dataclass
class Retrieved:
    """What retrieving one study brought: the Part 10 files written (C-GET, WADO-RS; none for a C-MOVE, whose instances
    arrive through the archive's listener) and the sub-operation counts."""

    files: list[Path] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    warning: int = 0
