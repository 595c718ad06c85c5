"""The study page and study/series downloads (being written)."""

from django.http import Http404


def study_detail(request, study_uid):
    raise Http404


def study_download(request, study_uid):
    raise Http404


def series_download(request, study_uid, series_uid):
    raise Http404
