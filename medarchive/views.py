"""Service-level pages: liveness for load balancers, worker heartbeats for provider staff."""

from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from subscribers.decorators import provider_staff_required

from .models import WorkerHeartbeat


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@provider_staff_required
def worker_status(request):
    return render(request, "medarchive/worker_status.html", {"heartbeats": WorkerHeartbeat.objects.all()[:50]})
