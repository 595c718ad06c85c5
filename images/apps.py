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
        portal.register(
            portal.PortalEntry(
                "Storage conditions",
                "Retention, compression at rest, immutability, legal holds and backup copies; the data stored and each run.",
                "storage-conditions",
                Role.ADMIN,
                order=60,
            )
        )
        portal.register(
            portal.PortalEntry(
                "Data stored",
                "Each institution's data-stored state from its latest storage-condition run.",
                "storage-provider",
                order=60,
                provider_staff=True,
            )
        )
