"""Domain errors of backups; `message` is written for the person who asked (portal message, command error, run row)."""

from __future__ import annotations


class BackupError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RunNotAllowed(BackupError):
    """The contract is not accepted (or was terminated), or outside its period: nothing runs."""


class RunAlreadyActive(BackupError):
    """Another run of the same contract is queued or running."""


class TargetNotWritable(BackupError):
    """The backup target refused a write (full, read-only, missing, no permission)."""


class TargetUnreadable(BackupError):
    """The backup target could not be read (not the same as a file that changed: that is a verification problem)."""


class ArchiveFileChanged(BackupError):
    """A file in the archive no longer has the SHA-256 recorded when it was received: it is not backed up as it is."""


class NothingToRestore(BackupError):
    """No verified set holds what was asked for."""


class BadRequest(BackupError):
    """The request names something that does not exist or is not of this contract (nothing was changed)."""
