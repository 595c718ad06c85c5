"""Placeholder for DICOMweb transactions being written right now (removed when they land)."""

from django.http import JsonResponse


def pending(request, *args, **kwargs):
    return JsonResponse({"error": "This DICOMweb transaction is not available yet."}, status=501)
