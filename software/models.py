"""Medical software: the catalogue, licences, processing jobs and their products, research collections, and the
polling of subscribers' own archives (software/polling/). Pixel data and artifacts live in storage, never here."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from subscribers.models import ApplicationEntity, Institution, User

# --- Catalogue and licences -----------------------------------------------------------------------------------------


class Software(models.Model):
    """A piece of medical software in the catalogue: downloadable (artifacts per version) or run on the server (a
    processing type, named by its processor id on the entry-point group medarchive.processors)."""

    class Kind(models.TextChoices):
        DOWNLOADABLE = "downloadable", "Downloadable"
        SERVER_RUN = "server_run", "Run on the server"

    name = models.CharField(max_length=200)
    vendor = models.CharField(max_length=200)
    intended_use = models.TextField(help_text="What the software is for, as its labelling states.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    processor_id = models.CharField(max_length=64, blank=True, help_text="Server-run only: the processing type id.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name_plural = "software"
        ordering = ["name", "vendor"]
        constraints = [
            models.UniqueConstraint(fields=["vendor", "name"], name="software_unique_vendor_name"),
            models.UniqueConstraint(fields=["processor_id"], condition=~models.Q(processor_id=""), name="software_unique_processor"),
            models.CheckConstraint(condition=models.Q(kind__in=["downloadable", "server_run"]), name="software_kind_valid"),
            models.CheckConstraint(
                condition=models.Q(kind="downloadable", processor_id="") | (models.Q(kind="server_run") & ~models.Q(processor_id="")),
                name="software_processor_iff_server_run",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.vendor})"

    @property
    def is_server_run(self) -> bool:
        return self.kind == self.Kind.SERVER_RUN


class SoftwareVersion(models.Model):
    """One released version of a downloadable software for one platform: its artifact in the "software" storage."""

    software = models.ForeignKey(Software, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64)
    platform = models.CharField(max_length=64, help_text="For example windows-x86_64, linux-x86_64, macos-arm64, any.")
    release_notes = models.TextField(blank=True)
    file_name = models.CharField(max_length=255, help_text="The artifact's name as offered for download.")
    storage_name = models.CharField(max_length=400, unique=True, help_text="Name in the software storage.")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the artifact as uploaded.")
    size_bytes = models.PositiveBigIntegerField()
    released_at = models.DateTimeField(default=timezone.now)
    uploaded_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["software", "-released_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["software", "version", "platform"], name="softwareversion_unique_per_platform")]

    def __str__(self):
        return f"{self.software.name} {self.version} ({self.platform})"


class Licence(models.Model):
    """An institution's right to use one software: from and until when, for how many seats and/or uses."""

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="software_licences")
    software = models.ForeignKey(Software, on_delete=models.CASCADE, related_name="licences")
    valid_from = models.DateField(default=timezone.localdate)
    valid_until = models.DateField(null=True, blank=True, help_text="Last day of validity; empty: no end.")
    seats = models.PositiveIntegerField(null=True, blank=True, help_text="Distinct users who may use it; empty: any number.")
    usage_quota = models.PositiveIntegerField(null=True, blank=True, help_text="Uses (jobs, downloads) allowed; empty: no limit.")
    used_count = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    granted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["institution__name", "software__name"]
        constraints = [
            models.UniqueConstraint(fields=["institution", "software"], name="licence_unique_institution_software"),
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True) | models.Q(valid_until__gte=models.F("valid_from")),
                name="licence_until_after_from",
            ),
        ]

    def __str__(self):
        return f"{self.institution} – {self.software.name}"


class LicenceSeat(models.Model):
    """A user who has used a licence (a download or a job): counted against its seats."""

    licence = models.ForeignKey(Licence, on_delete=models.CASCADE, related_name="seat_holders")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    first_used_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["licence", "user"], name="licenceseat_unique_user")]

    def __str__(self):
        return f"{self.user} on {self.licence}"


class LicenceRequest(models.Model):
    """A run-software user asking for a licence their institution lacks; provider staff grant or refuse it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        GRANTED = "granted", "Granted"
        REFUSED = "refused", "Refused"

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="licence_requests")
    software = models.ForeignKey(Software, on_delete=models.CASCADE, related_name="licence_requests")
    requested_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decision_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=["pending", "granted", "refused"]), name="licencerequest_status_valid"),
            # One open request per institution and software: asking twice does not queue two.
            models.UniqueConstraint(
                fields=["institution", "software"], condition=models.Q(status="pending"), name="licencerequest_one_pending"
            ),
        ]

    def __str__(self):
        return f"{self.institution} asks for {self.software.name} ({self.status})"


# --- Research collections -------------------------------------------------------------------------------------------


class ResearchCollection(models.Model):
    """Where an institution's de-identified products go: a separate research Institution (a tenant of its own), so
    research users see new patients and studies under new identifiers and nothing that leads back to the originals."""

    institution = models.OneToOneField(Institution, on_delete=models.CASCADE, related_name="research_collection")
    research_institution = models.OneToOneField(Institution, on_delete=models.PROTECT, related_name="research_collection_of")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"research collection of {self.institution}"


# --- Processing jobs ------------------------------------------------------------------------------------------------


class Delivery(models.TextChoices):
    PULL = "pull", "Pull (DICOMweb or zip from the portal)"
    PUSH = "push", "Push by C-STORE to a receiving AE title"


class ProcessingJob(models.Model):
    """One run of a processing type on chosen images of one institution, with its products and delivery."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Partly succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Scope(models.TextChoices):
        INSTANCES = "instances", "Picked instances"
        SERIES = "series", "Series"
        STUDY = "study", "Study"

    class Origin(models.TextChoices):
        PORTAL = "portal", "Portal"
        API = "api", "REST API"
        COMMAND = "command", "Command line"
        POLL = "poll", "Polling source"

    FINISHED = (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.CANCELLED)

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="processing_jobs")
    requested_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by_name = models.CharField(max_length=200, blank=True, help_text="Who asked, as a text that outlives the user row.")
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.PORTAL)
    software = models.ForeignKey(Software, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    licence = models.ForeignKey(Licence, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    # What was applied, recorded when the job is accepted (the plugin may be upgraded later).
    processor_id = models.CharField(max_length=64)
    processor_name = models.CharField(max_length=200)
    processor_version = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    # What it runs on: UIDs of the picked instances, of the series, or of the study.
    scope = models.CharField(max_length=10, choices=Scope.choices)
    source_uids = models.JSONField(default=list)
    study = models.ForeignKey("images.Study", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    instances_processed = models.PositiveIntegerField(default=0, help_text="Source instances processed successfully (usage).")
    error = models.TextField(blank=True)
    time_limit_seconds = models.PositiveIntegerField(default=600, validators=[MinValueValidator(1)])
    memory_limit_mb = models.PositiveIntegerField(default=2048, validators=[MinValueValidator(64)])
    attempts = models.PositiveSmallIntegerField(default=0)
    celery_task_id = models.CharField(max_length=64, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Delivery of the products (push is software/delivery.py's deliver(job)).
    delivery = models.CharField(max_length=4, choices=Delivery.choices, default=Delivery.PULL)
    push_ae = models.ForeignKey(ApplicationEntity, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["queued", "running", "succeeded", "partial", "failed", "cancelled"]),
                name="processingjob_status_valid",
            ),
            models.CheckConstraint(condition=models.Q(scope__in=["instances", "series", "study"]), name="processingjob_scope_valid"),
            models.CheckConstraint(condition=models.Q(delivery__in=["pull", "push"]), name="processingjob_delivery_valid"),
            models.CheckConstraint(
                condition=models.Q(delivery="pull") | models.Q(push_ae__isnull=False), name="processingjob_push_names_ae"
            ),
        ]
        indexes = [
            models.Index(fields=["institution", "-created_at"], name="processingjob_inst_created"),
            models.Index(fields=["status"], name="processingjob_status"),
        ]

    def __str__(self):
        return f"job {self.pk} {self.processor_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ProcessingItem(models.Model):
    """One unit of work of a job (an instance, a series or a study, as the processor's scope says) and how it ended."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(ProcessingJob, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    label = models.CharField(max_length=200, help_text="What the item is, in words (series description, instance number).")
    source_uids = models.JSONField(default=list, help_text="SOP Instance UIDs of the item's source instances.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="processingitem_unique_position"),
            models.CheckConstraint(condition=models.Q(status__in=["pending", "done", "failed"]), name="processingitem_status_valid"),
        ]

    def __str__(self):
        return f"{self.job_id}/{self.position} {self.label} ({self.status})"


class ProcessingProduct(models.Model):
    """An instance a job produced and ingested (into the source study, or the research collection for de-id)."""

    job = models.ForeignKey(ProcessingJob, on_delete=models.CASCADE, related_name="products")
    item = models.ForeignKey(ProcessingItem, on_delete=models.CASCADE, related_name="products")
    # The archive owner of the product (the job's institution, or its research institution).
    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="+")
    instance = models.ForeignKey("images.Instance", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    study_instance_uid = models.CharField(max_length=64)
    series_instance_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "series_instance_uid", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "sop_instance_uid"], name="processingproduct_unique_per_job")]
        indexes = [models.Index(fields=["series_instance_uid"], name="processingproduct_series")]

    def __str__(self):
        return self.sop_instance_uid


# --- Polling of subscribers' archives (software/polling/) -----------------------------------------------------------


class PollSource(models.Model):
    """A subscriber's own archive the server polls for studies to process: a DICOM node or a DICOMweb endpoint."""

    class Kind(models.TextChoices):
        DICOM = "dicom", "DICOM node (C-FIND, then C-GET or C-MOVE)"
        DICOMWEB = "dicomweb", "DICOMweb endpoint (QIDO-RS, then WADO-RS)"

    class Retrieve(models.TextChoices):
        C_GET = "c-get", "C-GET"
        C_MOVE = "c-move", "C-MOVE"

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="poll_sources")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # DICOM node.
    ae_title = models.CharField("AE title", max_length=16, blank=True)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    retrieve = models.CharField(max_length=6, choices=Retrieve.choices, default=Retrieve.C_GET)
    # DICOMweb endpoint.
    url = models.URLField(max_length=500, blank=True)
    username = models.CharField(max_length=200, blank=True)
    # Stored for the poller; never shown back in any page, API answer or log.
    secret = models.TextField(blank=True, help_text="Password or bearer token; write-only.")
    # What to collect: attribute keyword -> value (e.g. {"ModalitiesInStudy": "CT", "StudyDescription": "*CHEST*"}).
    query = models.JSONField(default=dict, blank=True)
    max_age_days = models.PositiveIntegerField(null=True, blank=True, help_text="Only studies at most this old; empty: any age.")
    processor_id = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    every_minutes = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    delivery = models.CharField(max_length=4, choices=Delivery.choices, default=Delivery.PULL)
    push_ae = models.ForeignKey(ApplicationEntity, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_active = models.BooleanField(default=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failed polls (for backoff).")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["institution__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["institution", "name"], name="pollsource_unique_name_per_institution"),
            models.CheckConstraint(condition=models.Q(kind__in=["dicom", "dicomweb"]), name="pollsource_kind_valid"),
            models.CheckConstraint(
                condition=(models.Q(kind="dicom") & ~models.Q(ae_title="") & ~models.Q(host="") & models.Q(port__isnull=False))
                | (models.Q(kind="dicomweb") & ~models.Q(url="")),
                name="pollsource_address_complete",
            ),
            models.CheckConstraint(condition=models.Q(delivery__in=["pull", "push"]), name="pollsource_delivery_valid"),
            models.CheckConstraint(condition=models.Q(delivery="pull") | models.Q(push_ae__isnull=False), name="pollsource_push_names_ae"),
        ]

    def __str__(self):
        if self.kind == self.Kind.DICOM:
            return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"
        return f"{self.name} ({self.url})"


class PollRun(models.Model):
    """One poll of a source: what it found, fetched and processed, or why it failed."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    source = models.ForeignKey(PollSource, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    found = models.PositiveIntegerField(default=0)
    fetched = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["source", "-started_at"], name="pollrun_source_started")]

    def __str__(self):
        return f"{self.source} {self.started_at:%Y-%m-%d %H:%M} {self.status}"


class PolledStudy(models.Model):
    """A study a source offered, processed once: the poller skips what is here with a job."""

    source = models.ForeignKey(PollSource, on_delete=models.CASCADE, related_name="polled_studies")
    study_instance_uid = models.CharField(max_length=64)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey(ProcessingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "polled studies"
        ordering = ["-first_seen_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["source", "study_instance_uid"], name="polledstudy_unique_per_source")]

    def __str__(self):
        return f"{self.study_instance_uid} from {self.source}"


# --- Saved queries (software/services/saved_queries.py) -------------------------------------------------------------


class SavedQuery(models.Model):
    """A named DICOM match on the institution's own studies (QIDO-RS study-level matching, images/query.py) that a
    run-software user runs a processing type on: one job per study it matches when run."""

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="saved_queries")
    name = models.CharField(max_length=100)
    # Attribute keyword -> DICOM match value, e.g. {"PatientName": "DOE*", "ModalitiesInStudy": "CT", "StudyDate": "20260101-"}.
    match = models.JSONField(default=dict, blank=True)
    max_age_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Only studies dated at most this many days ago; empty: any age."
    )
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "saved queries"
        ordering = ["institution__name", "name"]
        constraints = [models.UniqueConstraint(fields=["institution", "name"], name="savedquery_unique_name_per_institution")]

    def __str__(self):
        return self.name
