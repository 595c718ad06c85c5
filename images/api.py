"""REST API of the archive under /api/v1/: the imaging conditions of a series, for people and for scripts."""

from __future__ import annotations

import json

from django.db.models import F
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from subscribers import audit
from subscribers.access import NotVisible

from . import conditions, selectors
from .models import Series


def varying_conditions(per_instance: list[dict]) -> dict[str, list]:
    """Parameters with more than one value among a series' instances, each with its distinct values in instance order."""
    distinct: dict[str, dict[str, object]] = {}
    for found in per_instance:
        for keyword, value in (found or {}).items():
            distinct.setdefault(keyword, {}).setdefault(json.dumps(value, sort_keys=True), value)
    return {keyword: list(values.values()) for keyword, values in distinct.items() if len(values) > 1}


class SeriesConditionsApi(APIView):
    """GET /api/v1/studies/{study}/series/{series}/conditions: the acquisition parameters of one series, with units."""

    def get(self, request, study: str, series: str):
        principal = request.auth
        visible_study = selectors.get_study(principal, study)
        found: Series | None = selectors.series_visible_to(principal).filter(study=visible_study, series_instance_uid=series).first()
        if found is None:
            raise NotVisible()
        per_instance = list(found.instances.order_by(F("instance_number").asc(nulls_last=True), "pk").values_list("conditions", flat=True))
        audit.record(
            action="conditions.read",
            principal=principal,
            request=request._request,
            object_type="images.series",
            object_id=found.series_instance_uid,
            object_repr=str(found),
            study_instance_uid=visible_study.study_instance_uid,
        )
        return Response(
            {
                "modality": found.modality,
                "series_instance_uid": found.series_instance_uid,
                "conditions": conditions.describe(found.conditions, found.modality),
                "varies": varying_conditions(per_instance),
            }
        )


urlpatterns = [
    path("studies/<str:study>/series/<str:series>/conditions", SeriesConditionsApi.as_view(), name="api-series-conditions"),
]
