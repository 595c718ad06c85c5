"""Portal pages of the archive: the worklist, the study page, downloads and uploads."""

from django.urls import include, path

from .views import share, studies, study, upload

urlpatterns = [
    path("studies/", studies.study_list, name="study-list"),
    path("studies/<str:study_uid>/", study.study_detail, name="study-detail"),
    path("studies/<str:study_uid>/download.zip", study.study_download, name="study-download"),
    path("studies/<str:study_uid>/series/<str:series_uid>/download.zip", study.series_download, name="series-download"),
    path("studies/<str:study_uid>/share/", share.share_study, name="study-share"),
    path("studies/<str:study_uid>/shares/<int:share_id>/revoke/", share.revoke_share, name="study-share-revoke"),
    path("upload/", upload.upload_page, name="upload"),
    path("upload/file/", upload.upload_file, name="upload-file"),
    path("storage/", include("images.storage_conditions.urls")),
]
