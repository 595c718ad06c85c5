from django.apps import AppConfig


class MedarchiveConfig(AppConfig):
    """The project itself as an app: worker heartbeat, the all-in-one `serve` and `seed_demo` commands."""

    name = "medarchive"
    verbose_name = "Service operation"
