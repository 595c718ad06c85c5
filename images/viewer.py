"""The OHIF viewer served by the portal (same origin, reading the portal's own DICOMweb with the user's session)."""

from urllib.parse import urlencode

VIEWER_PREFIX = "/viewer/"


def study_viewer_url(study_instance_uid: str) -> str:
    """Where the portal opens a study in OHIF."""
    return f"{VIEWER_PREFIX}viewer?{urlencode({'StudyInstanceUIDs': study_instance_uid})}"
