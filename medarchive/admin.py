from django.contrib import admin

from .models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["worker", "broker", "beats", "first_seen", "last_seen"]
    readonly_fields = ["worker", "broker", "beats", "first_seen", "last_seen"]

    def has_add_permission(self, request):
        return False
