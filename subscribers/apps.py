from django.apps import AppConfig


class SubscribersConfig(AppConfig):
    """Institutions, memberships and roles, credentials, audit: who is this and what may they do."""

    name = "subscribers"
    verbose_name = "Subscribers"

    def ready(self):
        from . import signals  # noqa: F401  (login/logout audit)
