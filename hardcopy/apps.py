from django.apps import AppConfig


class HardcopyConfig(AppConfig):
    """Print devices, film sheets and the DICOM Print SCU."""

    name = "hardcopy"
