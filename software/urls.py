"""Software app URLs: the catalogue and licences (/software/), processing jobs (/processing/), the Process page of a study,
the processing API (/api/v1/processing/), and the polling pages (software/polling/urls.py)."""

from django.urls import include, path

from . import api, saved_query_views, views

urlpatterns = [
    path("api/v1/processing/types", api.TypesApi.as_view(), name="processing-api-types"),
    path("api/v1/processing/jobs", api.JobsApi.as_view(), name="processing-api-jobs"),
    path("api/v1/processing/jobs/<int:job_id>", api.JobApi.as_view(), name="processing-api-job"),
    path("api/v1/processing/jobs/<int:job_id>/cancel", api.JobCancelApi.as_view(), name="processing-api-job-cancel"),
    path("api/v1/processing/saved-queries", api.SavedQueriesApi.as_view(), name="processing-api-saved-queries"),
    path("api/v1/processing/saved-queries/<int:saved_query_id>/run", api.SavedQueryRunApi.as_view(), name="processing-api-saved-query-run"),
    path("software/", views.catalogue_page, name="software-catalogue"),
    path("software/register/", views.software_register, name="software-register"),
    path("software/requests/", views.licence_requests, name="software-requests"),
    path("software/requests/<int:request_id>/refuse/", views.licence_request_refuse, name="software-request-refuse"),
    path("software/<int:software_id>/", views.software_detail, name="software-detail"),
    path("software/<int:software_id>/versions/", views.version_upload, name="software-version-upload"),
    path("software/<int:software_id>/licences/", views.licence_grant, name="software-licence-grant"),
    path("software/<int:software_id>/request/", views.licence_request, name="software-licence-request"),
    path("software/versions/<int:version_id>/download", views.version_download, name="software-download"),
    path("software/", include("software.polling.urls")),
    path("processing/saved-queries/", saved_query_views.saved_query_list, name="processing-saved-queries"),
    path("processing/saved-queries/<int:saved_query_id>/run/", saved_query_views.saved_query_run, name="processing-saved-query-run"),
    path("processing/jobs/", views.job_list, name="processing-jobs"),
    path("processing/jobs/<int:job_id>/", views.job_detail, name="processing-job"),
    path("processing/jobs/<int:job_id>/cancel/", views.job_cancel, name="processing-job-cancel"),
    path("studies/<str:study_uid>/process/", views.process_study, name="software-process-study"),
]
