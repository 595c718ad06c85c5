from django.apps import AppConfig


class ImagesConfig(AppConfig):
    """The archive: ingest, index, storage, delivery."""

    name = "images"
