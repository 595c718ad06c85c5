"""URLs of the storage-condition pages, mounted under storage/ by images/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.overview, name="storage-conditions"),
    path("conditions/default/", views.condition_default, name="storage-condition-default"),
    path("conditions/new/", views.condition_add, name="storage-condition-add"),
    path("conditions/<int:pk>/", views.condition_edit, name="storage-condition-edit"),
    path("conditions/<int:pk>/remove/", views.condition_remove, name="storage-condition-remove"),
    path("holds/", views.holds, name="storage-holds"),
    path("holds/new/", views.hold_place, name="storage-hold-place"),
    path("holds/<int:pk>/lift/", views.hold_lift, name="storage-hold-lift"),
    path("past-retention/", views.past_retention, name="storage-past-retention"),
    path("past-retention/<str:study_uid>/delete/", views.study_delete, name="storage-study-delete"),
    path("institutions/", views.provider_overview, name="storage-provider"),
]
