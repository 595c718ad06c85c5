"""Backup contracts and their negotiation, the objects of backup, backup sets and runs.

A contract between the provider and an institution fixes the terms: the backup mode, the objects of
backup (the coverage), the schedule, the contract period, the accounting points of the mode and the
rate, and the backup target. Terms are negotiated in rounds (propose, counter, accept, reject,
terminate); every round keeps a snapshot of the terms with who said it and when. Only an accepted
contract runs.

The mode decides the unit that is backed up, verified, restored and accounted, a BackupObject:
- all at a set time: one object, everything the contract covers;
- per institution: one object per acquiring institution (DICOM InstitutionName or a registered site);
- per patient: one object per patient;
- per examination: one object per study.
Each run of an object writes a BackupSet: a manifest (every file with SHA-256, size, UIDs, and the index
rows to rebuild the archive's records) over content-addressed blobs in the backup storage, so a file
already stored with the same SHA-256 is never copied again. A set is complete only once verified.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from images.models import Instance, Patient, Study
from subscribers.models import Institution


class BackupMode(models.TextChoices):
    ALL_AT_TIME = "all_at_time", "All at a set time"
    PER_INSTITUTION = "per_institution", "Per institution"
    PER_PATIENT = "per_patient", "Per patient"
    PER_EXAMINATION = "per_examination", "Per examination"


class Coverage(models.TextChoices):
    """What the contract's objects of backup are drawn from."""

    ALL = "all", "Everything of the institution"
    ACQUIRING_INSTITUTIONS = "acquiring_institutions", "Chosen acquiring institutions"
    PATIENTS = "patients", "Chosen patients"
    STUDIES = "studies", "Chosen studies"


class Contract(models.Model):
    """The current terms on the table (while negotiating) or agreed (once accepted)."""

    class Status(models.TextChoices):
        PROPOSED = "proposed", "Proposed by the provider"
        COUNTERED = "countered", "Counter-proposed by the institution"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        TERMINATED = "terminated", "Terminated"

    class Party(models.TextChoices):
        PROVIDER = "provider", "Provider"
        INSTITUTION = "institution", "Institution"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="backup_contracts")
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PROPOSED)
    # Which side must answer next (the other side made the last proposal); empty once accepted/rejected/terminated.
    awaiting = models.CharField(max_length=12, choices=Party.choices, blank=True, default=Party.INSTITUTION)

    # --- terms ---
    mode = models.CharField(max_length=20, choices=BackupMode.choices)
    coverage = models.CharField(max_length=24, choices=Coverage.choices, default=Coverage.ALL)
    # For coverage other than ALL: acquiring institution names, patient pks or study pks.
    coverage_items = models.JSONField(default=list, blank=True)
    schedule_time = models.TimeField(null=True, blank=True, help_text="Time of day for 'all at a set time' and 'per institution'.")
    quiet_minutes = models.PositiveIntegerField(
        default=60, help_text="Per examination: a study is complete when no instance arrived for this long."
    )
    period_start = models.DateField()
    period_end = models.DateField(null=True, blank=True, help_text="Empty: open-ended.")
    accounting_points = models.DecimalField(
        max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0"))], help_text="Accounting points of the mode."
    )
    rate = models.DecimalField(
        max_digits=12, decimal_places=4, validators=[MinValueValidator(Decimal("0"))], help_text="Price of one point for one month."
    )
    currency = models.CharField(max_length=3, default="EUR")
    target = models.CharField(max_length=40, default="backup", help_text="Storage alias of the backup target (settings.STORAGES).")

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    accepted_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["institution", "status"], name="contract_inst_status")]

    def __str__(self):
        return self.title or f"{self.get_mode_display()} backup for {self.institution}"

    @property
    def runs_allowed(self) -> bool:
        return self.status == self.Status.ACCEPTED


class ContractRound(models.Model):
    """One step of the negotiation, kept for ever: who said what, when, with a snapshot of the terms."""

    class Action(models.TextChoices):
        PROPOSE = "propose", "Proposed"
        COUNTER = "counter", "Counter-proposed"
        ACCEPT = "accept", "Accepted"
        REJECT = "reject", "Rejected"
        TERMINATE = "terminate", "Terminated"

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    party = models.CharField(max_length=12, choices=Contract.Party.choices)
    action = models.CharField(max_length=10, choices=Action.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    terms = models.JSONField(help_text="The terms as they stood after this round (JSON-safe: Decimals as strings).")
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["contract", "number"]
        constraints = [models.UniqueConstraint(fields=["contract", "number"], name="contract_round_number_unique")]

    def __str__(self):
        return f"{self.contract} round {self.number}: {self.get_action_display()} by {self.get_party_display()}"


class BackupObject(models.Model):
    """The unit the contract's mode backs up, verifies, restores and accounts separately."""

    class Kind(models.TextChoices):
        ALL = "all", "Everything covered"
        ACQUIRING_INSTITUTION = "acquiring_institution", "Acquiring institution"
        PATIENT = "patient", "Patient"
        STUDY = "study", "Study"

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="backup_objects")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    # all: ""; acquiring_institution: its name; patient: str(Patient.pk); study: str(Study.pk).
    key = models.CharField(max_length=200, blank=True)
    label = models.CharField(max_length=300, blank=True, help_text="What people see (patient name and ID, study description...).")
    patient = models.ForeignKey(Patient, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Backup state, kept current by the runs (what the portal shows and billing reads).
    last_backup_at = models.DateTimeField(null=True, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    files = models.PositiveIntegerField(default=0, help_text="Files in the latest verified set.")
    bytes = models.PositiveBigIntegerField(default=0, help_text="Bytes in the latest verified set.")
    dirty = models.BooleanField(default=True, help_text="Data changed since the latest verified set.")

    class Meta:
        ordering = ["contract", "kind", "label", "id"]
        constraints = [models.UniqueConstraint(fields=["contract", "kind", "key"], name="backup_object_unique_key")]

    def __str__(self):
        return self.label or self.get_kind_display()


class BackupBlob(models.Model):
    """A file in a backup target, named by its content: written once, shared by every set that holds it."""

    target = models.CharField(max_length=40)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # Empty: written but not yet re-read. A run's verification re-reads only blobs not verified before.
    verified_at = models.DateTimeField(null=True, blank=True)
    # Set when a verification found the file changed or missing: the next run writes it again instead of reusing it.
    damaged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["target", "sha256"], name="backup_blob_unique_content")]

    def __str__(self):
        return f"{self.target}:{self.sha256[:12]}"


class BackupSet(models.Model):
    """One backup of one object: a manifest over blobs. Complete only when verified."""

    class Status(models.TextChoices):
        WRITING = "writing", "Being written"
        WRITTEN = "written", "Written, not yet verified"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Failed"
        DAMAGED = "damaged", "Damaged (verification found changed or missing files)"

    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="sets")
    backup_object = models.ForeignKey(BackupObject, on_delete=models.PROTECT, related_name="sets")
    target = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WRITING)
    manifest_name = models.CharField(max_length=300, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    files = models.PositiveIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    new_files = models.PositiveIntegerField(default=0, help_text="Files this set copied (the rest were already in the target).")
    new_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    written_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    problems = models.JSONField(default=list, blank=True, help_text="Files verification found changed or missing.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["backup_object", "status", "-created_at"], name="backup_set_object_status")]

    def __str__(self):
        return f"Set {self.pk} of {self.backup_object} ({self.get_status_display()})"


class BackupSetFile(models.Model):
    """One instance in a set (also in the manifest): what restore brings back and verification checks."""

    backup_set = models.ForeignKey(BackupSet, on_delete=models.CASCADE, related_name="entries")
    blob = models.ForeignKey(BackupBlob, on_delete=models.PROTECT, related_name="+")
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    study_instance_uid = models.CharField(max_length=64)
    series_instance_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64)
    patient_key = models.CharField(max_length=200, blank=True, help_text="PatientID|Issuer, to restore one patient.")
    acquiring_institution = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["backup_set", "sop_instance_uid"], name="backup_set_file_unique_sop")]
        indexes = [models.Index(fields=["backup_set", "study_instance_uid"], name="backup_set_file_study")]

    def __str__(self):
        return self.sop_instance_uid


class BackupRun(models.Model):
    """One piece of background work on a contract: a backup, a verification or a restore, with its progress."""

    class Kind(models.TextChoices):
        BACKUP = "backup", "Backup"
        VERIFY = "verify", "Verification"
        RESTORE = "restore", "Restore"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="runs")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    # What the run was asked to do (objects, a set to restore from, restore scope and destination...).
    parameters = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    trigger = models.CharField(max_length=20, default="manual", help_text="manual, schedule, command, retry.")
    task_id = models.CharField(max_length=64, blank=True)
    files_total = models.PositiveIntegerField(default=0)
    files_done = models.PositiveIntegerField(default=0)
    bytes_total = models.PositiveBigIntegerField(default=0)
    bytes_done = models.PositiveBigIntegerField(default=0)
    message = models.TextField(blank=True, help_text="The error a person can act on, or a summary.")
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last progress: a stale one means the worker died.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Never two active runs of the same contract (backup and restore alike): the database refuses the second.
            models.UniqueConstraint(
                fields=["contract"], condition=Q(status__in=["queued", "running"]), name="backup_run_one_active_per_contract"
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.pk} of {self.contract} ({self.get_status_display()})"

    @property
    def percent(self) -> int:
        if self.bytes_total:
            return min(100, int(100 * self.bytes_done / self.bytes_total))
        if self.files_total:
            return min(100, int(100 * self.files_done / self.files_total))
        return 100 if self.status == self.Status.DONE else 0
