"""The archive's index: patient / study / series / instance, each owned by one institution.

Pixel data never lives here: instances point at their bytes in the "archive" storage. Every
attribute DICOM query/retrieve matches on is a column with the indexes a large archive needs;
the full DICOM JSON of each instance (without bulk data) is kept for WADO-RS metadata.
"""

from django.db import models

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
        indexes = [models.Index(fields=["institution", "patient_name_search"], name="patient_inst_name")]

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

    class Meta:
        verbose_name_plural = "studies"
        constraints = [models.UniqueConstraint(fields=["institution", "study_instance_uid"], name="study_unique_uid_per_institution")]
        indexes = [
            models.Index(fields=["institution", "-study_date", "-id"], name="study_inst_date"),
            models.Index(fields=["institution", "accession_number"], name="study_inst_accession"),
            models.Index(fields=["study_instance_uid"], name="study_uid"),
            models.Index(fields=["patient", "-study_date"], name="study_patient_date"),
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
    transfer_syntax_uid = models.CharField(max_length=64, help_text="As received.")
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(default=1)
    bits_allocated = models.PositiveSmallIntegerField(null=True, blank=True)
    photometric_interpretation = models.CharField(max_length=16, blank=True)
    size_bytes = models.PositiveBigIntegerField(help_text="Size of the file as received.")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the stored file.")
    dataset_sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the dataset without file meta: identity of content.")
    storage_name = models.CharField(max_length=400, unique=True, help_text="Name in the archive storage.")
    conditions = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="DICOM JSON model, without bulk data.")
    source = models.CharField(max_length=20, blank=True, help_text="How it arrived: c-store, stow-rs, upload, import.")
    received_at = models.DateTimeField(auto_now_add=True)

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
