"""Portal pages of the archive (uploads; study pages come with the portal work)."""

from django.urls import path

from .views import upload

urlpatterns = [
    path("upload/", upload.upload_page, name="upload"),
    path("upload/file/", upload.upload_file, name="upload-file"),
]
