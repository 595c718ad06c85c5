from django.apps import AppConfig


class SoftwareConfig(AppConfig):
    """Medical software catalogue and image processing."""

    name = "software"

    def ready(self):
        from images import study_actions
        from subscribers import portal
        from subscribers.models import Role

        study_actions.register(study_actions.StudyAction("Process…", "software-process-study", Role.SOFTWARE, order=30))

        portal.register(
            portal.PortalEntry(
                "Software catalogue",
                "Medical software your institution is licensed for: downloads with their checksums, and licence requests.",
                "software-catalogue",
                Role.SOFTWARE,
                order=45,
            )
        )
        portal.register(
            portal.PortalEntry(
                "Processing jobs",
                "Processing run on your images (projections, reformats, filters, de-identification): progress and products.",
                "processing-jobs",
                Role.SOFTWARE,
                order=46,
            )
        )
        portal.register(portal.PortalEntry("Software catalogue", "", "software-catalogue", provider_staff=True, order=45))
        portal.register(portal.PortalEntry("Licence requests", "", "software-requests", provider_staff=True, order=46))
        # Polling sources and processing usage (software/polling/, software/usage.py).
        portal.register(
            portal.PortalEntry(
                "Polling sources",
                "Your PACS or DICOMweb archive, polled for new studies to process: state, last polls, failures.",
                "poll-sources",
                Role.ADMIN,
                order=47,
            )
        )
        portal.register(
            portal.PortalEntry(
                "Processing usage", "Processing runs, instances and time per month.", "processing-usage", Role.ADMIN, order=48
            )
        )
        portal.register(portal.PortalEntry("Polling sources", "", "poll-sources", provider_staff=True, order=47))
        portal.register(portal.PortalEntry("Processing usage", "", "processing-usage", provider_staff=True, order=48))
