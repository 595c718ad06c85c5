"""REST API of processing under /api/v1/processing/: the types, submitting jobs, their status and cancelling them.

POST /api/v1/processing/jobs {"type": "mip", "parameters": {...}, "study": UID | "series": [UID] | "instances": [UID] |
"uids": [UID], "delivery": "pull" | "push", "push_ae": "AET"} answers 201 with the job; 403 with the reason when the
institution is not licensed, 400 naming the parameter outside the schema, 404 for images of another institution.
Saved queries: GET/POST /api/v1/processing/saved-queries, and POST .../saved-queries/<id>/run {"type", "parameters", ...}
answers 201 with one job per own study matched.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from subscribers import audit
from subscribers.access import NotVisible
from subscribers.drf import HasRole
from subscribers.models import Role

from . import selectors
from .errors import InvalidParameters, LicenceRefused
from .models import Delivery, ProcessingJob
from .services import jobs, saved_queries


def job_json(job: ProcessingJob, *, detail: bool = False) -> dict:
    data = {
        "id": job.pk,
        "url": reverse("processing-api-job", kwargs={"job_id": job.pk}),
        "type": job.processor_id,
        "type_name": job.processor_name,
        "version": job.processor_version,
        "parameters": job.parameters,
        "scope": job.scope,
        "study_instance_uid": job.study.study_instance_uid if job.study_id else None,
        "status": job.status,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "error": job.error,
        "delivery": job.delivery,
        "push_ae": job.push_ae.ae_title if job.push_ae_id else None,
        "delivered_at": job.delivered_at.isoformat() if job.delivered_at else None,
        "delivery_error": job.delivery_error,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "cancel_requested": job.cancel_requested_at is not None,
    }
    if detail:
        products = list(
            job.products.order_by("series_instance_uid", "pk").values(
                "series_instance_uid", "sop_instance_uid", "study_instance_uid", "institution_id"
            )
        )
        research = job.products.exclude(institution_id=job.institution_id).exists()
        data["items"] = [
            {"position": i.position, "label": i.label, "status": i.status, "error": i.error, "source_instances": len(i.source_uids)}
            for i in job.items.order_by("position")
        ]
        if research:
            # De-identified products live in the research collection: counted here, never named beside the originals.
            data["products"] = {"research_collection": True, "instances": len(products)}
        else:
            series = {}
            for p in products:
                series.setdefault(p["series_instance_uid"], []).append(p["sop_instance_uid"])
            data["products"] = {
                "research_collection": False,
                "instances": len(products),
                "series": [{"series_instance_uid": uid, "sop_instance_uids": sops} for uid, sops in series.items()],
            }
    return data


class TypesApi(APIView):
    """GET: the processing types of this server, their parameters (JSON schema) and whether the institution may run them."""

    permission_classes = [HasRole(Role.SOFTWARE)]

    def get(self, request):
        types = []
        for row in selectors.processing_types_for(request.auth):
            processor = row["processor"]
            if processor is None:
                types.append({"id": row["id"], "available": False, "unavailable_reason": row["refusal"]})
                continue
            types.append(
                {
                    "id": processor.id,
                    "name": processor.name,
                    "version": processor.version,
                    "description": processor.description,
                    "scope": processor.scope,
                    "modalities": list(processor.modalities),
                    "sop_classes": list(processor.sop_classes),
                    "parameters_schema": processor.parameters_schema,
                    "available": True,
                    "licensed": row["refusal"] is None,
                    "refusal": row["refusal"],
                }
            )
        return Response({"types": types})


class JobsApi(APIView):
    """GET: the institution's jobs, newest first. POST: submit a job."""

    permission_classes = [HasRole(Role.SOFTWARE)]

    class Input(serializers.Serializer):
        type = serializers.CharField(max_length=64)
        parameters = serializers.JSONField(required=False, default=dict)
        study = serializers.CharField(required=False, max_length=64)
        series = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)
        instances = serializers.ListField(
            child=serializers.CharField(max_length=64), required=False, default=list, max_length=jobs.MAX_UIDS
        )
        uids = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list, max_length=jobs.MAX_UIDS)
        delivery = serializers.ChoiceField(choices=Delivery.values, required=False, default=Delivery.PULL)
        push_ae = serializers.CharField(required=False, max_length=16)

    def get(self, request):
        found = selectors.jobs_visible_to(request.auth).select_related("study")[:200]
        return Response({"jobs": [job_json(job) for job in found]})

    def post(self, request):
        principal = request.auth
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        uids = [*([values["study"]] if values.get("study") else []), *values["series"], *values["instances"], *values["uids"]]
        push_ae = None
        if values.get("push_ae"):
            push_ae = selectors.receiving_aes(principal).filter(ae_title=values["push_ae"]).first()
            if push_ae is None:
                return Response(
                    {
                        "error": f"Your institution has no active receiving AE title {values['push_ae']!r}.",
                        "code": "unknown_push_ae",
                        "parameter": "push_ae",
                    },
                    status=400,
                )
        address = audit.client_address(request._request)
        try:
            job = jobs.submit_job(
                principal=principal,
                processor_id=values["type"],
                parameters=values["parameters"],
                uids=uids,
                delivery=values["delivery"],
                push_ae=push_ae,
                origin=ProcessingJob.Origin.API,
                address=address,
            )
        except LicenceRefused as refusal:
            return Response({"error": refusal.reason, "code": refusal.code}, status=403)
        except InvalidParameters as error:
            return Response({"error": error.messages[0], "code": "invalid_parameters", "parameter": error.parameter}, status=400)
        except NotVisible:
            raise
        except ValidationError as error:
            return Response({"error": " ".join(error.messages), "code": error.code or "invalid"}, status=400)
        return Response(job_json(job, detail=True), status=status.HTTP_201_CREATED)


class JobApi(APIView):
    """GET: one job with its items and products."""

    permission_classes = [HasRole(Role.SOFTWARE)]

    def get(self, request, job_id: int):
        return Response(job_json(selectors.get_job(request.auth, job_id), detail=True))


class JobCancelApi(APIView):
    """POST: cancel a queued job, or ask a running one to stop."""

    permission_classes = [HasRole(Role.SOFTWARE)]

    def post(self, request, job_id: int):
        job = selectors.get_job(request.auth, job_id)
        try:
            job = jobs.cancel_job(principal=request.auth, job=job, address=audit.client_address(request._request))
        except ValidationError as error:
            return Response({"error": " ".join(error.messages), "code": error.code or "invalid"}, status=409)
        return Response(job_json(job))


# --- Saved queries ----------------------------------------------------------------------------------------------------


def saved_query_json(saved) -> dict:
    return {
        "id": saved.pk,
        "name": saved.name,
        "match": saved.match,
        "max_age_days": saved.max_age_days,
        "created_by": saved.created_by.username if saved.created_by_id else None,
        "created_at": saved.created_at.isoformat(),
        "run_url": reverse("processing-api-saved-query-run", kwargs={"saved_query_id": saved.pk}),
    }


def _error_response(error: ValidationError) -> Response:
    if hasattr(error, "error_dict"):
        parameter, errors = next(iter(error.error_dict.items()))
        return Response({"error": " ".join(errors[0].messages), "code": errors[0].code or "invalid", "parameter": parameter}, status=400)
    return Response({"error": " ".join(error.messages), "code": error.code or "invalid"}, status=400)


class SavedQueriesApi(APIView):
    """GET: the institution's saved queries. POST {"name", "match": {"PatientName": "DOE*", ...}, "max_age_days"}: save one."""

    permission_classes = [HasRole(Role.SOFTWARE)]

    class Input(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        match = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=64), required=False, default=dict)
        max_age_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=saved_queries.MAX_AGE_DAYS)

    def get(self, request):
        found = saved_queries.saved_queries_visible_to(request.auth).order_by("name")[:500]
        return Response({"saved_queries": [saved_query_json(s) for s in found]})

    def post(self, request):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            saved = saved_queries.save_query(
                principal=request.auth,
                name=values["name"],
                match=values["match"],
                max_age_days=values.get("max_age_days"),
                address=audit.client_address(request._request),
            )
        except ValidationError as error:
            return _error_response(error)
        return Response(saved_query_json(saved), status=status.HTTP_201_CREATED)


class SavedQueryRunApi(APIView):
    """POST {"type", "parameters", "delivery", "push_ae"}: one job per own study the saved query matches (201)."""

    permission_classes = [HasRole(Role.SOFTWARE)]

    class Input(serializers.Serializer):
        type = serializers.CharField(max_length=64)
        parameters = serializers.JSONField(required=False, default=dict)
        delivery = serializers.ChoiceField(choices=Delivery.values, required=False, default=Delivery.PULL)
        push_ae = serializers.CharField(required=False, max_length=16)

    def post(self, request, saved_query_id: int):
        principal = request.auth
        saved = saved_queries.get_saved_query(principal, saved_query_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        push_ae = None
        if values.get("push_ae"):
            push_ae = selectors.receiving_aes(principal).filter(ae_title=values["push_ae"]).first()
            if push_ae is None:
                return Response(
                    {
                        "error": f"Your institution has no active receiving AE title {values['push_ae']!r}.",
                        "code": "unknown_push_ae",
                        "parameter": "push_ae",
                    },
                    status=400,
                )
        try:
            run = saved_queries.run_saved_query(
                principal=principal,
                saved_query=saved,
                processor_id=values["type"],
                parameters=values["parameters"],
                delivery=values["delivery"],
                push_ae=push_ae,
                origin=ProcessingJob.Origin.API,
                address=audit.client_address(request._request),
            )
        except LicenceRefused as refusal:
            return Response({"error": refusal.reason, "code": refusal.code}, status=403)
        except InvalidParameters as error:
            return Response({"error": error.messages[0], "code": "invalid_parameters", "parameter": error.parameter}, status=400)
        except ValidationError as error:
            return _error_response(error)
        return Response(
            {
                "saved_query": saved_query_json(saved),
                "jobs": [job_json(job) for job in run.jobs],
                "skipped": [{"study_instance_uid": uid, "reason": reason} for uid, reason in run.skipped],
            },
            status=status.HTTP_201_CREATED,
        )
