"""Domain errors of the archive; each way in translates them (DICOM status, STOW-RS failure reason, HTTP)."""

from __future__ import annotations


class IngestRefused(Exception):
    """An object was refused and nothing was changed. `reason` is written for the person who sent it."""

    code = "refused"
    dicom_status = 0xC000  # PS3.4 B.2.3: Error, cannot understand
    http_status = 400

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NotDicom(IngestRefused):
    code = "not_dicom"


class InvalidDataset(IngestRefused):
    code = "invalid_dataset"
    dicom_status = 0xA900  # Error: Data Set does not match SOP Class


class TooLarge(IngestRefused):
    code = "too_large"
    dicom_status = 0xA700  # Refused: Out of Resources
    http_status = 413


class ConflictingInstance(IngestRefused):
    code = "conflict"
    dicom_status = 0x0111  # PS3.7 C.4: Duplicate SOP Instance
    http_status = 409


class NotAuthorized(IngestRefused):
    code = "not_authorized"
    dicom_status = 0x0124  # PS3.7 C.4: Refused, not authorized
    http_status = 403


class StorageFailed(IngestRefused):
    code = "storage_failed"
    dicom_status = 0xA700
    http_status = 503
