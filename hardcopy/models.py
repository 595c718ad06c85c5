"""Film formats, print devices and film-sheet jobs; a job names its images by identifier only, never holds pixels."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from subscribers.models import Device, Institution, User

from . import films


class FilmFormat(models.Model):
    """A reusable sheet layout of an institution: film, layout, window, annotations."""

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="film_formats")
    name = models.CharField(max_length=100)
    film_size = models.CharField(max_length=16, choices=films.FILM_SIZE_CHOICES, default="14INX17IN")
    orientation = models.CharField(max_length=10, choices=films.ORIENTATION_CHOICES, default=films.PORTRAIT)
    rows = models.PositiveSmallIntegerField(default=4, validators=[MinValueValidator(1), MaxValueValidator(films.MAX_ROWS)])
    columns = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(films.MAX_COLUMNS)])
    # Both empty: each image's own VOI (its first window, else its VOI LUT, else its range).
    window_center = models.FloatField(null=True, blank=True)
    window_width = models.FloatField(null=True, blank=True, validators=[MinValueValidator(1)])
    magnification_type = models.CharField(max_length=10, choices=films.MAGNIFICATION_CHOICES, default="CUBIC")
    medium = models.CharField(max_length=12, choices=films.MEDIUM_CHOICES, default="BLUE FILM")
    copies = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(99)])
    border_density = models.CharField(max_length=6, choices=films.DENSITY_CHOICES, default="BLACK")
    dpi = models.PositiveSmallIntegerField("resolution (dpi)", default=300, validators=[MinValueValidator(72), MaxValueValidator(600)])
    show_patient = models.BooleanField("patient name, ID and birth date", default=True)
    show_study = models.BooleanField("study date and description", default=True)
    show_institution = models.BooleanField("institution", default=True)
    show_numbers = models.BooleanField("series and instance numbers", default=True)
    show_orientation = models.BooleanField("orientation markers", default=True)
    show_ruler = models.BooleanField("length ruler", default=True)
    show_conditions = models.BooleanField("imaging conditions", default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    SNAPSHOT_FIELDS = [
        "name",
        "film_size",
        "orientation",
        "rows",
        "columns",
        "window_center",
        "window_width",
        "magnification_type",
        "medium",
        "copies",
        "border_density",
        "dpi",
        "show_patient",
        "show_study",
        "show_institution",
        "show_numbers",
        "show_orientation",
        "show_ruler",
        "show_conditions",
    ]

    class Meta:
        ordering = ["institution__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["institution", "name"], name="filmformat_unique_name_per_institution"),
            models.CheckConstraint(
                condition=models.Q(rows__gte=1, rows__lte=films.MAX_ROWS, columns__gte=1, columns__lte=films.MAX_COLUMNS),
                name="filmformat_layout_in_range",
            ),
            models.CheckConstraint(
                condition=models.Q(window_center__isnull=True, window_width__isnull=True)
                | models.Q(window_center__isnull=False, window_width__gte=1),
                name="filmformat_window_complete",
            ),
        ]

    def __str__(self):
        return self.name

    def snapshot(self) -> dict:
        return {name: getattr(self, name) for name in self.SNAPSHOT_FIELDS}


class PrintDevice(models.Model):
    """The printing side of a registered Device: where its sheets go and what a DICOM printer accepts."""

    class Output(models.TextChoices):
        HOT_FOLDER = "hot_folder", "Print agent: PDF files into a hot folder"
        CUPS = "cups", "Print agent: CUPS queue"
        DICOM = "dicom", "DICOM film printer"

    device = models.OneToOneField(Device, on_delete=models.CASCADE, related_name="printer")
    output = models.CharField(max_length=12, choices=Output.choices)
    hot_folder = models.CharField(max_length=500, blank=True, help_text="Folder on the agent's machine.")
    cups_queue = models.CharField(max_length=100, blank=True)
    ae_title = models.CharField("AE title", max_length=16, blank=True)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    # What a DICOM printer accepts (empty: anything); checked before a job is sent.
    film_sizes = models.JSONField(default=list, blank=True)
    media = models.JSONField(default=list, blank=True)
    magnifications = models.JSONField(default=list, blank=True)
    last_status = models.CharField(max_length=200, blank=True, help_text="The printer's last reported status.")
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["device__name"]

    def __str__(self):
        return self.device.name

    @property
    def institution_id(self):
        return self.device.institution_id

    @property
    def is_dicom(self) -> bool:
        return self.output == self.Output.DICOM

    def target(self) -> str:
        if self.output == self.Output.DICOM:
            return f"{self.ae_title}@{self.host}:{self.port}"
        if self.output == self.Output.CUPS:
            return f"CUPS queue {self.cups_queue}"
        return f"hot folder {self.hot_folder}"


class PrintJob(models.Model):
    """One film sheet (with copies) to print or download: the format as it was, and its images by identifier."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        FETCHED = "fetched", "Images fetched"
        PRINTING = "printing", "Printing"
        PRINTED = "printed", "Printed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    OPEN_STATES = (State.QUEUED, State.FETCHED, State.PRINTING)

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="print_jobs")
    device = models.ForeignKey(PrintDevice, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs")
    film_format = models.ForeignKey(FilmFormat, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    format = models.JSONField(help_text="The film format as it was when the job was made.")
    # [{"sop_instance_uid": ..., "frame": n}, ...] in tile order; never pixels.
    tiles = models.JSONField(default=list)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    reason = models.CharField(max_length=500, blank=True, help_text="Why it failed or was cancelled.")
    printer_status = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["institution", "-created_at"], name="printjob_institution_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__in=["queued", "fetched", "printing", "printed", "failed", "cancelled"]),
                name="printjob_state_valid",
            )
        ]

    def __str__(self):
        return f"print job {self.pk}"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    @property
    def layout(self) -> str:
        return f"{self.format['rows']}x{self.format['columns']}"

    @property
    def film_size_label(self) -> str:
        return films.FILM_SIZES.get(self.format.get("film_size"), (self.format.get("film_size", ""),))[0]


class PrintJobEvent(models.Model):
    """What happened to a job, in order: state changes, the printer's status and N-EVENT-REPORTs."""

    job = models.ForeignKey(PrintJob, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=10, blank=True)
    message = models.CharField(max_length=500)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return self.message
