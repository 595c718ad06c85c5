"""Django admin for provider staff. Credentials are issued through services (audited), not edited here."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import ApiToken, ApplicationEntity, AuditEvent, Device, Institution, Membership, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "can_register", "can_receive", "can_run_software", "can_print", "is_admin", "is_active"]
    autocomplete_fields = ["user"]


@admin.register(Institution)
class InstitutionAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "contact_email", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "slug", "contact_email"]
    inlines = [MembershipInline]


@admin.register(User)
class MedarchiveUserAdmin(UserAdmin):
    list_display = ["username", "email", "first_name", "last_name", "is_staff", "is_active"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "institution", "can_register", "can_receive", "can_run_software", "can_print", "is_admin", "is_active"]
    list_filter = ["institution", "is_active", "is_admin"]
    search_fields = ["user__username", "institution__slug"]
    autocomplete_fields = ["user", "institution"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "institution", "membership", "device", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["institution"]
    search_fields = ["prefix", "name"]
    readonly_fields = [f.name for f in ApiToken._meta.fields]

    def has_add_permission(self, request):
        return False  # tokens are issued by the issue_token command or the portal, which show them once


@admin.register(ApplicationEntity)
class ApplicationEntityAdmin(admin.ModelAdmin):
    list_display = ["ae_title", "host", "port", "institution", "can_send", "can_receive", "is_active"]
    list_filter = ["institution", "is_active"]
    search_fields = ["ae_title", "host"]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "institution", "is_active"]
    list_filter = ["kind", "institution"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "outcome", "institution", "object_type", "object_id", "client_address"]
    list_filter = ["outcome", "action"]
    search_fields = ["actor", "action", "object_id"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
