"""REST API of the archive under /api/v1/: imaging conditions of a series, and sharing studies with receivers."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db.models import F
from django.urls import path
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from subscribers import audit
from subscribers.access import NotVisible
from subscribers.models import Institution, User

from . import conditions, selectors
from .models import Series, Share
from .sharing import services as sharing


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


def share_json(share: Share) -> dict:
    return {
        "id": share.pk,
        "study_instance_uid": share.study.study_instance_uid if share.study_id else None,
        "patient_id": share.patient.patient_id if share.patient_id else None,
        "with_institution": share.with_institution.slug if share.with_institution_id else None,
        "with_user": share.with_user.username if share.with_user_id else None,
        "expires_at": share.expires_at.isoformat() if share.expires_at else None,
        "revoked_at": share.revoked_at.isoformat() if share.revoked_at else None,
        "created_at": share.created_at.isoformat(),
    }


class StudySharesApi(APIView):
    """GET: who the owner shared this study with. POST: share it (or all studies of its patient) with an institution or a user."""

    class Input(serializers.Serializer):
        with_institution = serializers.SlugField(required=False)
        with_user = serializers.CharField(required=False, max_length=150)
        expires_at = serializers.DateTimeField(required=False, allow_null=True)
        whole_patient = serializers.BooleanField(required=False, default=False)

    def get(self, request, study: str):
        principal = request.auth
        found = selectors.get_study(principal, study)
        if found.institution_id != principal.institution_id:
            raise NotVisible()  # only the owner sees whom it shared with
        return Response([share_json(s) for s in selectors.shares_of_study(principal, found)])

    def post(self, request, study: str):
        principal = request.auth
        found = selectors.get_study(principal, study)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        # Recipients are named by slug or username; an unknown one is a 400, like a malformed one.
        with_institution = with_user = None
        if values.get("with_institution"):
            with_institution = Institution.objects.filter(slug=values["with_institution"]).first()
            if with_institution is None:
                return Response({"error": "No institution with that slug.", "code": "unknown_recipient"}, status=400)
        if values.get("with_user"):
            with_user = User.objects.filter(username=values["with_user"], is_active=True).first()
            if with_user is None:
                return Response({"error": "No active user with that username.", "code": "unknown_recipient"}, status=400)
        if found.institution_id != principal.institution_id:
            raise NotVisible()  # a receiver cannot pass a study on
        try:
            created = sharing.share(
                principal=principal,
                study=None if values["whole_patient"] else found,
                patient=found.patient if values["whole_patient"] else None,
                with_institution=with_institution,
                with_user=with_user,
                expires_at=values.get("expires_at"),
            )
        except ValidationError as error:
            return Response({"error": " ".join(error.messages), "code": error.code or "invalid"}, status=400)
        return Response(share_json(created), status=status.HTTP_201_CREATED)


class ShareApi(APIView):
    """DELETE /api/v1/shares/{id}: revoke a share the caller's institution gave."""

    def delete(self, request, pk: int):
        principal = request.auth
        share = Share.objects.filter(pk=pk, owner_id=principal.institution_id).select_related("study", "patient").first()
        if share is None:
            raise NotVisible()
        sharing.revoke(principal=principal, share=share)
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("studies/<str:study>/series/<str:series>/conditions", SeriesConditionsApi.as_view(), name="api-series-conditions"),
    path("studies/<str:study>/shares", StudySharesApi.as_view(), name="api-study-shares"),
    path("shares/<int:pk>", ShareApi.as_view(), name="api-share"),
]
