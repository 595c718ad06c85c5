"""Portal pages of polling sources and of processing usage, included by software/urls.py under /software/."""

from django.urls import path

from .. import usage_views
from . import views

urlpatterns = [
    path("polling/", views.source_list, name="poll-sources"),
    path("polling/add/", views.source_add, name="poll-source-add"),
    path("polling/<int:source_id>/", views.source_detail, name="poll-source"),
    path("polling/<int:source_id>/active/", views.source_set_active, name="poll-source-set-active"),
    path("polling/<int:source_id>/poll-now/", views.source_poll_now, name="poll-source-poll-now"),
    path("usage/", usage_views.usage_page, name="processing-usage"),
]
