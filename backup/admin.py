"""Django admin for provider staff: read-only. Contracts change only through the negotiation services (audited,
with a round each); sets, blobs and runs only through the backup engine."""

from django.contrib import admin

from .models import BackupObject, BackupRun, BackupSet, Contract, ContractRound


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ContractRoundInline(admin.TabularInline):
    model = ContractRound
    extra = 0
    fields = ["number", "party", "action", "user", "created_at", "message", "terms"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Contract)
class ContractAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "institution", "mode", "status", "awaiting", "period_start", "period_end", "accounting_points", "rate"]
    list_filter = ["status", "mode", "institution"]
    search_fields = ["title", "institution__name", "institution__slug"]
    inlines = [ContractRoundInline]


@admin.register(BackupObject)
class BackupObjectAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "contract", "kind", "last_backup_at", "last_verified_at", "files", "bytes", "dirty"]
    list_filter = ["kind", "dirty"]


@admin.register(BackupSet)
class BackupSetAdmin(ReadOnlyAdmin):
    list_display = ["pk", "contract", "backup_object", "status", "files", "bytes", "new_files", "created_at", "verified_at"]
    list_filter = ["status", "target"]


@admin.register(BackupRun)
class BackupRunAdmin(ReadOnlyAdmin):
    list_display = ["pk", "contract", "kind", "status", "trigger", "files_done", "files_total", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
