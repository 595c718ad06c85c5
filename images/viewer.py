"""The OHIF viewer served by the portal (same origin, reading the portal's own DICOMweb with the user's session).

bin/install_viewer installs it (images/viewer_install.py) into settings.VIEWER_ROOT; images/viewer_views.py serves it
under VIEWER_PREFIX. The paths below are baked into the installed files: a test checks them against the URL
configuration, and changing one needs a reinstall (the install stamp covers this file).
"""

from urllib.parse import urlencode

VIEWER_PREFIX = "/viewer/"
# Where OHIF's DICOMweb data source points (QIDO-RS, WADO-RS, and WADO-URI under /wado).
DICOMWEB_ROOT = "/dicomweb"
# Where the viewer's logo leads back to: the portal's home page.
PORTAL_HOME = "/"


def study_viewer_url(study_instance_uid: str) -> str:
    """Where the portal opens a study in OHIF."""
    return f"{VIEWER_PREFIX}viewer?{urlencode({'StudyInstanceUIDs': study_instance_uid})}"
