"""Service-level pages: health check and worker status."""

from django.urls import path

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("ops/workers/", views.worker_status, name="worker-status"),
]
