"""Tenants and the principals that act for them: institutions, users, memberships, tokens, AE titles, devices, audit."""

import re

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    """What a member may do inside one institution."""

    REGISTER = "register", "Register images"
    RECEIVE = "receive", "Receive images"
    SOFTWARE = "software", "Run software"
    PRINT = "print", "Print"
    ADMIN = "admin", "Institution admin"


class Institution(models.Model):
    """A subscriber (tenant): every object holding patient data belongs to exactly one."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=40, blank=True)
    address = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=["active", "suspended"]), name="institution_status_valid"),
        ]

    def __str__(self):
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class User(AbstractUser):
    """A person. Provider staff (the service operator) are users with is_staff; everything else is per membership."""

    @property
    def is_provider_staff(self) -> bool:
        return self.is_active and self.is_staff


class Membership(models.Model):
    """A user's place in one institution, with the roles it carries there."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="memberships")
    can_register = models.BooleanField("register images", default=False)
    can_receive = models.BooleanField("receive images", default=False)
    can_run_software = models.BooleanField("run software", default=False)
    can_print = models.BooleanField("print", default=False)
    is_admin = models.BooleanField("institution admin", default=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    ROLE_FIELDS = {
        Role.REGISTER: "can_register",
        Role.RECEIVE: "can_receive",
        Role.SOFTWARE: "can_run_software",
        Role.PRINT: "can_print",
        Role.ADMIN: "is_admin",
    }

    class Meta:
        ordering = ["institution__name", "user__username"]
        constraints = [models.UniqueConstraint(fields=["user", "institution"], name="membership_unique_user_institution")]

    def __str__(self):
        return f"{self.user.username} @ {self.institution.slug}"

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(role for role, field in self.ROLE_FIELDS.items() if getattr(self, field))

    def set_roles(self, roles) -> None:
        wanted = {Role(r) for r in roles}
        for role, field in self.ROLE_FIELDS.items():
            setattr(self, field, role in wanted)


class Device(models.Model):
    """A machine acting for an institution over HTTP with its own credential (print agents, gateways)."""

    class Kind(models.TextChoices):
        FILM_PRINTER = "film_printer", "Film-sheet printer (print agent)"
        DICOM_PRINTER = "dicom_printer", "DICOM film printer"
        GATEWAY = "gateway", "Upload gateway"

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["institution__name", "name"]
        constraints = [models.UniqueConstraint(fields=["institution", "name"], name="device_unique_name_per_institution")]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"


class ApiToken(models.Model):
    """A bearer credential for scripts, DICOMweb clients and devices; only its SHA-256 is stored."""

    membership = models.ForeignKey(Membership, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens")
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens")
    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True, help_text="Public part, shown in lists to tell tokens apart.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(membership__isnull=False, device__isnull=True) | models.Q(membership__isnull=True, device__isnull=False)
                ),
                name="apitoken_belongs_to_membership_xor_device",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "active"


AE_TITLE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


def validate_ae_title(value: str) -> None:
    """PS3.5 6.2 AE: 1-16 characters of the default repertoire, no backslash or control characters, not all spaces."""
    if not AE_TITLE_RE.match(value or ""):
        raise ValidationError(
            "An AE title is 1 to 16 printable ASCII characters, without backslash and without leading or trailing spaces.",
            code="invalid_ae_title",
        )


class ApplicationEntity(models.Model):
    """A DICOM node of an institution: the calling AE title and host allowed to use it, and what it may do."""

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="application_entities")
    ae_title = models.CharField("AE title", max_length=16, validators=[validate_ae_title])
    host = models.CharField(max_length=255, help_text="Host name or IP address the peer connects from (and is reached at).")
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)], default=104)
    can_send = models.BooleanField("may send (store to the archive, query)", default=True)
    can_receive = models.BooleanField("may receive (C-MOVE destination)", default=False)
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "DICOM AE title"
        ordering = ["institution__name", "ae_title"]
        constraints = [
            # The listener identifies an institution by calling AE title and peer host together.
            models.UniqueConstraint(fields=["ae_title", "host"], name="ae_unique_title_host"),
        ]

    def __str__(self):
        return f"{self.ae_title}@{self.host}:{self.port}"


class AuditEvent(models.Model):
    """An append-only record of who did what to which object, from where, and how it ended."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        DENIED = "denied", "Denied"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=60, db_index=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.SUCCESS)
    # No database constraint: an event outlives the rows it names and is never rewritten when they go.
    institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    actor = models.CharField(max_length=200, help_text="Who acted, as a text that outlives the user row.")
    principal_kind = models.CharField(max_length=12, blank=True)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    client_address = models.CharField(max_length=255, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["institution", "-at"], name="audit_institution_at"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Audit events are append-only.")


class Notification(models.Model):
    """A message for a user in the portal (shares received, finished jobs); also e-mailed where configured."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="notifications")
    institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    text = models.CharField(max_length=300)
    link = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_user_unread")]

    def __str__(self):
        return self.text
