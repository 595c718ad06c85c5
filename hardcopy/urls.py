"""Hard copy: the devices' API (/api/v1/print/) and the portal's pages (/hardcopy/)."""

from django.urls import path

from . import api, views

urlpatterns = [
    path("api/v1/print/jobs", api.DeviceJobsApi.as_view(), name="print-api-jobs"),
    path("api/v1/print/jobs/<int:job_id>", api.DeviceJobApi.as_view(), name="print-api-job"),
    path("api/v1/print/jobs/<int:job_id>/state", api.DeviceJobStateApi.as_view(), name="print-api-job-state"),
    path(
        "api/v1/print/jobs/<int:job_id>/instances/<str:sop_instance_uid>/frames/<int:frame>/rendered",
        api.DeviceTileRenderedApi.as_view(),
        name="print-api-tile-rendered",
    ),
    path("hardcopy/jobs/", views.job_list, name="print-jobs"),
    path("hardcopy/jobs/<int:job_id>/", views.job_detail, name="print-job"),
    path("hardcopy/jobs/<int:job_id>/pdf", views.job_pdf, name="print-job-pdf"),
    path("hardcopy/jobs/<int:job_id>/cancel/", views.job_cancel, name="print-job-cancel"),
    path("hardcopy/jobs/<int:job_id>/retry/", views.job_retry, name="print-job-retry"),
    path("hardcopy/compose/<str:study_uid>/", views.compose, name="print-compose"),
    path("hardcopy/compose/<str:study_uid>/preview.png", views.compose_preview, name="print-compose-preview"),
]
