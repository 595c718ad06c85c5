from django.apps import AppConfig


class HardcopyConfig(AppConfig):
    """Print devices, film sheets and the DICOM Print SCU."""

    name = "hardcopy"

    def ready(self):
        from images import study_actions
        from subscribers import portal
        from subscribers.models import Role

        study_actions.register(study_actions.StudyAction("Print film sheet…", "print-compose", Role.PRINT, order=20))

        portal.register(
            portal.PortalEntry(
                "Print jobs",
                "Film sheets sent to printers or downloaded as PDF: their state, retry and cancel. Compose one from a study.",
                "print-jobs",
                Role.PRINT,
                order=40,
            )
        )
