"""Portal pages of the archive: the studies list and uploads."""

from django.urls import path

from .views import studies, upload

urlpatterns = [
    path("studies/", studies.study_list, name="study-list"),
    path("upload/", upload.upload_page, name="upload"),
    path("upload/file/", upload.upload_file, name="upload-file"),
]
