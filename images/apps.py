from django.apps import AppConfig


class ImagesConfig(AppConfig):
    """The archive: ingest, index, storage, delivery."""

    name = "images"

    def ready(self):
        from subscribers import portal
        from subscribers.models import Role

        portal.register(
            portal.PortalEntry(
                "Studies",
                "Your institution's studies and those other institutions shared with you.",
                "study-list",
                Role.RECEIVE,
                order=10,
            )
        )
        portal.register(
            portal.PortalEntry(
                "Upload",
                "Send DICOM files, folders or zips from the browser, with progress and a result per file.",
                "upload",
                Role.REGISTER,
                order=20,
            )
        )
