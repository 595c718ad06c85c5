"""Django admin for provider staff: the catalogue, licences, jobs and polling sources (secrets never shown)."""

from django.contrib import admin

from .models import Licence, LicenceRequest, PollRun, PollSource, ProcessingJob, ResearchCollection, Software, SoftwareVersion


class VersionInline(admin.TabularInline):
    model = SoftwareVersion
    fields = ("version", "platform", "file_name", "sha256", "size_bytes", "released_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Software)
class SoftwareAdmin(admin.ModelAdmin):
    list_display = ("name", "vendor", "kind", "processor_id", "is_active")
    list_filter = ("kind", "is_active")
    search_fields = ("name", "vendor", "processor_id")
    inlines = [VersionInline]


@admin.register(Licence)
class LicenceAdmin(admin.ModelAdmin):
    list_display = ("institution", "software", "valid_from", "valid_until", "usage_quota", "used_count", "seats", "revoked_at")
    list_filter = ("software",)
    search_fields = ("institution__name", "software__name")
    readonly_fields = ("used_count",)


@admin.register(LicenceRequest)
class LicenceRequestAdmin(admin.ModelAdmin):
    list_display = ("created_at", "institution", "software", "requested_by", "status")
    list_filter = ("status",)


@admin.register(ProcessingJob)
class ProcessingJobAdmin(admin.ModelAdmin):
    list_display = ("pk", "institution", "processor_id", "processor_version", "status", "progress_done", "progress_total", "created_at")
    list_filter = ("status", "processor_id")
    readonly_fields = [f.name for f in ProcessingJob._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ResearchCollection)
class ResearchCollectionAdmin(admin.ModelAdmin):
    list_display = ("institution", "research_institution", "created_at")


@admin.register(PollSource)
class PollSourceAdmin(admin.ModelAdmin):
    list_display = ("name", "institution", "kind", "processor_id", "every_minutes", "is_active", "last_polled_at", "failures")
    list_filter = ("kind", "is_active")
    exclude = ("secret",)  # write-only: set through the portal or add_poll_source


@admin.register(PollRun)
class PollRunAdmin(admin.ModelAdmin):
    list_display = ("source", "status", "started_at", "found", "fetched", "processed", "failed")
