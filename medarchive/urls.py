"""Top-level URL configuration: each app mounts its own URLs."""

from django.contrib import admin
from django.urls import include, path, re_path

from images.viewer_views import viewer_file
from subscribers.api import MeApi

admin.site.site_header = "medarchive — provider administration"
admin.site.site_title = "medarchive admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/me", MeApi.as_view(), name="api-me"),
    path("api/v1/", include("images.api")),
    path("dicomweb/", include("images.dicomweb.urls")),
    # The OHIF viewer (images/viewer.py): its files, and index.html for its client-side routes.
    re_path(r"^viewer/(?P<path>.*)$", viewer_file, name="viewer"),
    path("backup/", include("backup.urls")),
    path("billing/", include("billing.urls")),
    path("", include("hardcopy.urls")),
    path("", include("software.urls")),
    path("", include("images.urls")),
    path("", include("medarchive.portal_urls")),
    path("", include("subscribers.urls")),
]
