"""The archive's index: patient / study / series / instance, each owned by one institution.

Pixel data never lives here: instances point at their bytes in the "archive" storage. Every
attribute DICOM query/retrieve matches on is a column with the indexes a large archive needs;
the full DICOM JSON of each instance (without bulk data) is kept for WADO-RS metadata.
"""

from datetime import date

from django.db import models
from django.db.models.functions import Coalesce

from subscribers.models import Institution


class ArchivePolicy(models.Model):
    """How the archive treats what an institution sends (one row per institution; defaults apply without one)."""

    class OnConflict(models.TextChoices):
        REJECT = "reject", "Refuse a different object under a known SOP Instance UID"
        KEEP_NEWEST = "keep_newest", "Keep the newest object under a known SOP Instance UID"

    institution = models.OneToOneField(Institution, on_delete=models.CASCADE, related_name="archive_policy")
    on_conflict = models.CharField(max_length=12, choices=OnConflict.choices, default=OnConflict.REJECT)

    def __str__(self):
        return f"{self.institution}: {self.get_on_conflict_display()}"


class Patient(models.Model):
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="patients")
    patient_id = models.CharField(max_length=64)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_name = models.CharField(max_length=324, blank=True)
    # Upper-cased name without the '^' separators' trailing noise, for case-insensitive wildcard matching.
    patient_name_search = models.CharField(max_length=324, blank=True)
    patient_birth_date = models.DateField(null=True, blank=True)
    patient_sex = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["institution", "patient_id", "issuer_of_patient_id"], name="patient_unique_id_per_institution"),
        ]
        indexes = [
            models.Index(fields=["institution", "patient_name_search"], name="patient_inst_name"),
            # The worklist: sort by name across institutions (own and shared), and name/ID prefixes ("DOE*") with
            # LIKE on PostgreSQL whatever the database's collation (pattern ops; a plain index elsewhere).
            models.Index(fields=["patient_name_search", "id"], name="patient_name_sort"),
            models.Index(fields=["patient_name_search"], opclasses=["varchar_pattern_ops"], name="patient_name_pattern"),
            models.Index(fields=["patient_id"], opclasses=["varchar_pattern_ops"], name="patient_id_pattern"),
        ]

    def __str__(self):
        return f"{self.patient_name or '(no name)'} [{self.patient_id}]"


class Study(models.Model):
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="studies")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    study_instance_uid = models.CharField(max_length=64)
    study_date = models.DateField(null=True, blank=True)
    study_time = models.TimeField(null=True, blank=True)
    accession_number = models.CharField(max_length=64, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    study_description = models.CharField(max_length=200, blank=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    # Backslash-separated, as DICOM multi-values are (e.g. "CT\SR").
    modalities_in_study = models.CharField(max_length=200, blank=True)
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0, help_text="Bytes as received.")
    received_at = models.DateTimeField(auto_now_add=True)
    last_received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Kept current by the backup app after each verification; storage conditions only read it.
    backup_copies = models.PositiveSmallIntegerField(default=0, help_text="Number of verified backup copies of the study.")

    class Meta:
        verbose_name_plural = "studies"
        constraints = [models.UniqueConstraint(fields=["institution", "study_instance_uid"], name="study_unique_uid_per_institution")]
        indexes = [
            models.Index(fields=["institution", "-study_date", "-id"], name="study_inst_date"),
            models.Index(fields=["institution", "accession_number"], name="study_inst_accession"),
            models.Index(fields=["study_instance_uid"], name="study_uid"),
            models.Index(fields=["patient", "-study_date"], name="study_patient_date"),
            # The worklist's keyset orders (images/worklist.py): an undated study counts as the oldest, on every
            # database, so the sort key is never NULL and one index serves both directions.
            models.Index(Coalesce("study_date", models.Value(date.min)).desc(), models.F("id").desc(), name="study_worklist_date"),
            models.Index(fields=["-received_at", "-id"], name="study_worklist_received"),
            models.Index(fields=["accession_number"], opclasses=["varchar_pattern_ops"], name="study_accession_pattern"),
        ]

    def __str__(self):
        return f"{self.study_date or ''} {self.study_description or self.study_instance_uid}".strip()

    @property
    def modalities(self) -> list[str]:
        return [m for m in self.modalities_in_study.split("\\") if m]


class Series(models.Model):
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="series")
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=200, blank=True)
    body_part_examined = models.CharField(max_length=16, blank=True)
    series_date = models.DateField(null=True, blank=True)
    series_time = models.TimeField(null=True, blank=True)
    # The acquiring site (DICOM InstitutionName) and equipment, for backup per acquiring institution.
    acquiring_institution_name = models.CharField(max_length=64, blank=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    manufacturer_model_name = models.CharField(max_length=64, blank=True)
    station_name = models.CharField(max_length=16, blank=True)
    # Imaging conditions (acquisition parameters) of the series, per modality; see images/conditions.py.
    conditions = models.JSONField(default=dict, blank=True)
    number_of_instances = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "series"
        constraints = [models.UniqueConstraint(fields=["institution", "series_instance_uid"], name="series_unique_uid_per_institution")]
        indexes = [
            models.Index(fields=["study", "series_number"], name="series_study_number"),
            models.Index(fields=["institution", "modality"], name="series_inst_modality"),
            models.Index(fields=["series_instance_uid"], name="series_uid"),
        ]

    def __str__(self):
        return f"{self.modality} #{self.series_number} {self.series_description}".strip()


class Instance(models.Model):
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="instances")
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="instances")
    series = models.ForeignKey(Series, on_delete=models.PROTECT, related_name="instances")
    sop_class_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64, help_text="Of the stored file (as received unless compressed at rest).")
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(default=1)
    bits_allocated = models.PositiveSmallIntegerField(null=True, blank=True)
    photometric_interpretation = models.CharField(max_length=16, blank=True)
    size_bytes = models.PositiveBigIntegerField(help_text="Size of the stored file (as received unless compressed at rest).")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the stored file.")
    dataset_sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the dataset without file meta: identity of content.")
    storage_name = models.CharField(max_length=400, unique=True, help_text="Name in the archive storage.")
    conditions = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="DICOM JSON model, without bulk data.")
    source = models.CharField(max_length=20, blank=True, help_text="How it arrived: c-store, stow-rs, upload, import.")
    received_at = models.DateTimeField(auto_now_add=True)
    # Compression at rest (images/storage_conditions): the file as received, once replaced by a lossless re-encoding.
    original_transfer_syntax_uid = models.CharField(max_length=64, blank=True, help_text="As received, when compressed at rest.")
    original_size_bytes = models.PositiveBigIntegerField(null=True, blank=True, help_text="Size as received, when compressed at rest.")
    original_sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the file as received, when compressed at rest.")
    compressed_at = models.DateTimeField(null=True, blank=True)
    compression_skipped_syntax = models.CharField(
        max_length=64, blank=True, help_text="Lossless syntax found not to help (no saving, or not pixel-identical): not tried again."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["institution", "sop_instance_uid"], name="instance_unique_uid_per_institution")]
        indexes = [
            models.Index(fields=["series", "instance_number"], name="instance_series_number"),
            models.Index(fields=["sop_instance_uid"], name="instance_uid"),
            models.Index(fields=["study"], name="instance_study"),
            models.Index(fields=["sha256"], name="instance_sha256"),
        ]

    def __str__(self):
        return self.sop_instance_uid

    @property
    def transfer_syntax_as_received(self) -> str:
        return self.original_transfer_syntax_uid or self.transfer_syntax_uid

    @property
    def size_as_received(self) -> int:
        return self.size_bytes if self.original_size_bytes is None else self.original_size_bytes


class ShareQuerySet(models.QuerySet):
    def active(self, at=None):
        from django.utils import timezone

        at = at or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=at))


class Share(models.Model):
    """A delivery to a receiving subscriber: one study, or every study of a patient (now and later),
    shared by the owning institution with another institution or one named user, until revoked or expired."""

    owner = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="shares_given")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.CASCADE, related_name="shares")
    patient = models.ForeignKey(Patient, null=True, blank=True, on_delete=models.CASCADE, related_name="shares")
    with_institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.CASCADE, related_name="shares_received")
    with_user = models.ForeignKey("subscribers.User", null=True, blank=True, on_delete=models.CASCADE, related_name="shares_received")
    expires_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("subscribers.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey("subscribers.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = ShareQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(study__isnull=False, patient__isnull=True) | models.Q(study__isnull=True, patient__isnull=False),
                name="share_study_xor_patient",
            ),
            models.CheckConstraint(
                condition=models.Q(with_institution__isnull=False, with_user__isnull=True)
                | models.Q(with_institution__isnull=True, with_user__isnull=False),
                name="share_institution_xor_user",
            ),
        ]
        indexes = [
            models.Index(fields=["with_institution", "revoked_at"], name="share_to_institution"),
            models.Index(fields=["with_user", "revoked_at"], name="share_to_user"),
        ]

    def __str__(self):
        what = f"study {self.study_id}" if self.study_id else f"patient {self.patient_id}"
        return f"{what} → {self.with_institution or self.with_user}"

    @property
    def recipient(self):
        return self.with_institution or self.with_user


# --- Storage conditions (images/storage_conditions/) ----------------------------------------------------------------


class StorageCondition(models.Model):
    """How an institution keeps its data: its default (modality "") and per-modality rows that replace the default.

    The enforcement run (images/storage_conditions/enforcement.py) reads these; a change applies from the next run.
    """

    class RetentionFrom(models.TextChoices):
        STUDY_DATE = "study_date", "the study date"
        RECEIPT = "receipt", "receipt in the archive"

    class AtRetentionEnd(models.TextChoices):
        DELETE = "delete", "Delete the study"
        KEEP_AND_FLAG = "keep_flag", "Keep it and flag it for review"

    class Compression(models.TextChoices):
        NONE = "", "None (keep the files as received)"
        JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90", "JPEG 2000 lossless"
        JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80", "JPEG-LS lossless"

    MAX_RETENTION_YEARS = 200
    MAX_BACKUP_COPIES = 10

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="storage_conditions")
    modality = models.CharField(max_length=16, blank=True, help_text="Empty: the institution default.")
    retention_years = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty: kept without limit.")
    retention_from = models.CharField(max_length=12, choices=RetentionFrom.choices, default=RetentionFrom.STUDY_DATE)
    at_retention_end = models.CharField(max_length=12, choices=AtRetentionEnd.choices, default=AtRetentionEnd.KEEP_AND_FLAG)
    compression = models.CharField(max_length=64, choices=Compression.choices, blank=True, default=Compression.NONE)
    immutable = models.BooleanField(default=False, help_text="Nothing may be deleted before its retention ends, not even by an admin.")
    required_backup_copies = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey("subscribers.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["institution", "modality"]
        constraints = [
            models.UniqueConstraint(fields=["institution", "modality"], name="storage_condition_one_per_modality"),
            models.CheckConstraint(
                condition=models.Q(retention_years__isnull=True) | models.Q(retention_years__gte=1, retention_years__lte=200),
                name="storage_condition_retention_range",
            ),
            models.CheckConstraint(condition=models.Q(required_backup_copies__lte=10), name="storage_condition_copies_range"),
            models.CheckConstraint(condition=models.Q(retention_from__in=["study_date", "receipt"]), name="storage_condition_from_valid"),
            models.CheckConstraint(condition=models.Q(at_retention_end__in=["delete", "keep_flag"]), name="storage_condition_end_valid"),
            models.CheckConstraint(
                condition=models.Q(compression__in=["", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"]),
                name="storage_condition_compression_valid",
            ),
        ]

    def __str__(self):
        return f"{self.institution}: {self.modality or 'default'}"

    @property
    def is_default(self) -> bool:
        return not self.modality


class LegalHoldQuerySet(models.QuerySet):
    def active(self):
        return self.filter(lifted_at__isnull=True)


class LegalHold(models.Model):
    """A legal hold on a patient (every study of theirs, now and later) or one study: nothing held is deleted until
    it is lifted. Who placed and lifted it, and why, stays on the row after the study is gone."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="legal_holds")
    patient = models.ForeignKey(Patient, null=True, blank=True, on_delete=models.SET_NULL, related_name="legal_holds")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="legal_holds")
    subject = models.CharField(max_length=200, help_text="What is held, in words that outlive the rows.")
    reason = models.CharField(max_length=500)
    placed_at = models.DateTimeField(auto_now_add=True)
    placed_by = models.ForeignKey("subscribers.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    placed_by_name = models.CharField(max_length=200)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey("subscribers.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lifted_by_name = models.CharField(max_length=200, blank=True)
    lift_reason = models.CharField(max_length=500, blank=True)

    objects = LegalHoldQuerySet.as_manager()

    class Meta:
        ordering = ["-placed_at", "-id"]
        constraints = [
            # A hold in force names exactly one patient or one study (lifted ones may outlive theirs).
            models.CheckConstraint(
                condition=models.Q(lifted_at__isnull=False)
                | models.Q(patient__isnull=False, study__isnull=True)
                | models.Q(patient__isnull=True, study__isnull=False),
                name="legal_hold_patient_xor_study",
            ),
        ]
        indexes = [models.Index(fields=["institution", "lifted_at"], name="legal_hold_inst_active")]

    def __str__(self):
        return f"hold on {self.subject}"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class StorageSnapshot(models.Model):
    """One enforcement run for one institution: what it did, and the data-stored state it found afterwards."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="storage_snapshots")
    trigger = models.CharField(max_length=20, help_text="schedule, command or portal")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    progress_at = models.DateTimeField(auto_now_add=True, help_text="Last sign of life of the run.")
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Progress of the compression pass, for the portal.
    instances_to_check = models.PositiveIntegerField(default=0)
    instances_checked = models.PositiveIntegerField(default=0)
    # What the run did.
    studies_deleted = models.PositiveIntegerField(default=0)
    instances_deleted = models.PositiveIntegerField(default=0)
    bytes_deleted = models.PositiveBigIntegerField(default=0)
    instances_compressed = models.PositiveIntegerField(default=0)
    bytes_saved_by_run = models.PositiveBigIntegerField(default=0)
    problems = models.JSONField(default=list, blank=True, help_text="What the run could not do, in words.")
    # The data-stored state after the run.
    studies = models.PositiveIntegerField(default=0)
    instances = models.PositiveIntegerField(default=0)
    bytes_received = models.PositiveBigIntegerField(default=0)
    bytes_stored = models.PositiveBigIntegerField(default=0)
    instances_compressed_total = models.PositiveIntegerField(default=0)
    studies_due_for_deletion = models.PositiveIntegerField(default=0, help_text="Past retention, to be deleted, still stored (held).")
    studies_flagged = models.PositiveIntegerField(default=0, help_text="Past retention, kept and flagged for review.")
    studies_held = models.PositiveIntegerField(default=0)
    studies_lacking_backup_copies = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["institution", "-started_at"], name="storage_snapshot_inst_started")]

    def __str__(self):
        return f"{self.institution} {self.started_at:%Y-%m-%d %H:%M} {self.status}"

    @property
    def bytes_saved(self) -> int:
        """Space saved by compression at rest."""
        return max(self.bytes_received - self.bytes_stored, 0)
