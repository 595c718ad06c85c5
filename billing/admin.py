"""Django admin of billing: read-only. Tariffs and invoices change only through the services (portal, commands)."""

from django.contrib import admin

from .models import Invoice, InvoiceLine, InvoiceRun, Tariff


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Tariff)
class TariffAdmin(ReadOnlyAdmin):
    list_display = ["mode", "accounting_points", "rate", "currency", "storage_price", "valid_from", "valid_until"]
    list_filter = ["mode"]


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    fields = ["position", "contract_label", "mode", "object_ref", "service_start", "service_end", "days", "amount", "note"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["number", "kind", "institution", "period_start", "issue_date", "total", "currency"]
    list_filter = ["kind", "period_start"]
    search_fields = ["number", "institution__name"]
    inlines = [InvoiceLineInline]


@admin.register(InvoiceRun)
class InvoiceRunAdmin(ReadOnlyAdmin):
    list_display = ["period_start", "institution", "trigger", "status", "created_at", "finished_at", "message"]
