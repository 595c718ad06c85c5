"""Read queries of the software app, always scoped to the caller."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from images.models import Instance
from images.selectors import instances_visible_to
from subscribers.access import NotVisible, Principal
from subscribers.models import ApplicationEntity, Role

from .models import Licence, LicenceRequest, ProcessingJob, Software, SoftwareVersion
from .processors import registry
from .services.licences import refusal_reason


def processable_instances(principal: Principal) -> QuerySet[Instance]:
    """The caller's own institution's instances: processing never runs on images only shared with it."""
    if principal.institution is None:
        return Instance.objects.none()
    return instances_visible_to(principal).filter(institution_id=principal.institution_id)


def jobs_visible_to(principal: Principal) -> QuerySet[ProcessingJob]:
    """Jobs of the caller's institution, for its run-software users and admins."""
    if principal.institution is None or not (principal.has_role(Role.SOFTWARE) or principal.has_role(Role.ADMIN)):
        return ProcessingJob.objects.none()
    return ProcessingJob.objects.filter(institution=principal.institution).select_related("requested_by", "push_ae")


def get_job(principal: Principal, job_id) -> ProcessingJob:
    try:
        return jobs_visible_to(principal).get(pk=int(job_id))
    except (ProcessingJob.DoesNotExist, TypeError, ValueError):
        raise NotVisible() from None


def receiving_aes(principal: Principal) -> QuerySet[ApplicationEntity]:
    """The institution's AE titles that may receive (push delivery targets)."""
    if principal.institution is None:
        return ApplicationEntity.objects.none()
    return ApplicationEntity.objects.filter(institution=principal.institution, can_receive=True, is_active=True).order_by("ae_title")


@dataclass
class CatalogueEntry:
    software: Software
    licence: Licence | None
    refusal: str | None  # why it cannot be used now (None: licensed and usable)
    available: bool = True  # server-run: its processing type is loaded on this server
    unavailable_reason: str = ""

    @property
    def licensed(self) -> bool:
        return self.refusal is None and self.available


def catalogue_for(principal: Principal) -> list[CatalogueEntry]:
    """Every active software, with the caller's institution's licence and whether it can be used now."""
    software = list(Software.objects.filter(is_active=True).order_by("name", "vendor"))
    licences = {}
    if principal.institution is not None:
        licences = {lic.software_id: lic for lic in Licence.objects.filter(institution=principal.institution)}
    loaded, broken = registry.available(), registry.unavailable()
    entries = []
    for item in software:
        licence = licences.get(item.pk)
        refusal = refusal_reason(licence, item, user=principal.user)
        available, why = True, ""
        if item.is_server_run and item.processor_id not in loaded:
            available = False
            why = broken[item.processor_id].reason if item.processor_id in broken else "its processing type is not installed on this server"
        entries.append(CatalogueEntry(item, licence, refusal[0] if refusal else None, available, why))
    return entries


def get_software(principal: Principal, software_id) -> Software:
    queryset = Software.objects.all() if principal.is_provider_staff else Software.objects.filter(is_active=True)
    try:
        return queryset.get(pk=int(software_id))
    except (Software.DoesNotExist, TypeError, ValueError):
        raise NotVisible() from None


def get_version(principal: Principal, version_id) -> SoftwareVersion:
    try:
        version = SoftwareVersion.objects.select_related("software").get(pk=int(version_id))
    except (SoftwareVersion.DoesNotExist, TypeError, ValueError):
        raise NotVisible() from None
    if not version.software.is_active and not principal.is_provider_staff:
        raise NotVisible()
    return version


def licences_visible_to(principal: Principal) -> QuerySet[Licence]:
    queryset = Licence.objects.select_related("institution", "software")
    if principal.is_provider_staff:
        return queryset
    if principal.institution is None:
        return queryset.none()
    return queryset.filter(institution=principal.institution)


def licence_requests_visible_to(principal: Principal) -> QuerySet[LicenceRequest]:
    queryset = LicenceRequest.objects.select_related("institution", "software", "requested_by")
    if principal.is_provider_staff:
        return queryset
    if principal.institution is None:
        return queryset.none()
    return queryset.filter(institution=principal.institution)


def processing_types_for(principal: Principal) -> list[dict]:
    """Each processing type on this server, with whether the caller's institution may run it now and why not."""
    by_processor = {s.processor_id: s for s in Software.objects.filter(kind=Software.Kind.SERVER_RUN)}
    licences = {}
    if principal.institution is not None:
        licences = {
            lic.software_id: lic for lic in Licence.objects.filter(institution=principal.institution, software__in=by_processor.values())
        }
    rows = []
    for processor_id, processor in sorted(registry.available().items()):
        software = by_processor.get(processor_id)
        if software is None:
            refusal = f"{processor.name} is not offered in the software catalogue."
        else:
            found = refusal_reason(licences.get(software.pk), software, user=principal.user)
            refusal = found[0] if found else None
        rows.append({"processor": processor, "id": processor_id, "software": software, "refusal": refusal, "available": True})
    for processor_id, broken in sorted(registry.unavailable().items()):
        rows.append(
            {
                "processor": None,
                "id": processor_id,
                "software": by_processor.get(processor_id),
                "refusal": broken.reason,
                "available": False,
            }
        )
    return rows
