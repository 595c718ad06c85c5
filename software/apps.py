from django.apps import AppConfig


class SoftwareConfig(AppConfig):
    """Medical software catalogue and image processing."""

    name = "software"
