"""Domain errors of the software app; each way in turns them into its own answer (HTTP status, command error, form error)."""

from django.core.exceptions import PermissionDenied, ValidationError


class LicenceRefused(PermissionDenied):
    """The institution may not use this software now (no licence, expired, exhausted, no seat left): 403 with the reason."""

    def __init__(self, reason: str, *, code: str):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class InvalidParameters(ValidationError):
    """Parameters outside the processing type's schema: 400 naming the parameter."""

    def __init__(self, message: str, *, parameter: str = ""):
        super().__init__(message, code="invalid_parameters")
        self.parameter = parameter


class ArtifactCorrupted(Exception):
    """A stored artifact no longer matches its SHA-256: the download is refused and the provider alerted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
