"""The print devices' API under /api/v1/print/: open jobs, their images by identifier, progress and outcome.

Only a device credential gets anything here; a device sees its own open jobs and the images they name, and nothing
else exists for it (404).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from images import rendering
from subscribers import audit
from subscribers.access import NotVisible

from . import selectors, services, tiles
from .models import PrintJob


class IsDevice(permissions.BasePermission):
    def has_permission(self, request, view):
        principal = request.auth
        if principal is None:
            return False
        if principal.kind != "device":
            raise NotVisible()
        return True


def job_json(job: PrintJob, *, annotations: dict | None = None) -> dict:
    tiles_out = []
    for tile in job.tiles:
        item = dict(tile)
        if annotations is not None:
            item["annotations"] = annotations.get((tile["sop_instance_uid"], tile["frame"]), {})
        tiles_out.append(item)
    return {"id": job.pk, "state": job.state, "format": job.format, "tiles": tiles_out, "created_at": job.created_at.isoformat()}


class DeviceJobsApi(APIView):
    """GET: the open jobs sent to this device, oldest first."""

    permission_classes = [IsDevice]

    def get(self, request):
        jobs = selectors.open_jobs_for_device(request.auth)
        return Response({"jobs": [job_json(job) for job in jobs]})


class DeviceJobApi(APIView):
    """GET: one open job with what each tile shows besides its pixels (text annotations, not images)."""

    permission_classes = [IsDevice]

    def get(self, request, job_id: int):
        job = selectors.open_jobs_for_device(request.auth).filter(pk=job_id).first()
        if job is None:
            raise NotVisible()
        instances = selectors.job_instances(job)
        notes = {}
        for tile in job.tiles:
            instance = instances.get(tile["sop_instance_uid"])
            if instance is not None:
                notes[(tile["sop_instance_uid"], tile["frame"])] = tiles.annotations(instance, tile["frame"])
        return Response(job_json(job, annotations=notes))


class DeviceTileRenderedApi(APIView):
    """GET: one image of an open job of this device, after the job's VOI, as lossless 8-bit PNG at the size the job's
    sheet places it at the printer's resolution (the agent resamples nothing)."""

    permission_classes = [IsDevice]

    def get(self, request, job_id: int, sop_instance_uid: str, frame: int):
        job, instance = selectors.instance_for_device(request.auth, job_id, sop_instance_uid, frame)
        try:
            data = tiles.print_png(instance, frame, job.format)
        except rendering.RenderingError as error:
            return Response({"error": error.reason, "code": error.code}, status=422)
        audit.record(
            action="print.image.fetch",
            principal=request.auth,
            request=request._request,
            object_type="images.instance",
            object_id=instance.sop_instance_uid,
            object_repr=str(instance),
            job=job.pk,
            frame=frame,
        )
        response = HttpResponse(data, content_type="image/png")
        response["Cache-Control"] = "no-store"
        return response


class DeviceJobStateApi(APIView):
    """POST {"state": "fetched"|"printing"|"printed"|"failed", "reason": "..."}: progress and outcome of a job."""

    permission_classes = [IsDevice]

    class Input(serializers.Serializer):
        state = serializers.ChoiceField(choices=["fetched", "printing", "printed", "failed"])
        reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")

    def post(self, request, job_id: int):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = services.report_progress(principal=request.auth, job_id=job_id, **data.validated_data)
        except ValidationError as error:
            return Response({"error": " ".join(error.messages), "code": "state_invalid"}, status=409)
        return Response(job_json(job))
