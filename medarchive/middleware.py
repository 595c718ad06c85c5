"""Project-wide HTTP middleware."""

from django.middleware.gzip import GZipMiddleware

COMPRESSIBLE = ("application/json", "application/dicom+json", "text/", "application/javascript", "image/svg+xml")


class JsonGZipMiddleware(GZipMiddleware):
    """gzip for JSON and text answers only: DICOM and image bytes are already dense (or compressed) and large."""

    def process_response(self, request, response):
        if not response.get("Content-Type", "").startswith(COMPRESSIBLE):
            return response
        return super().process_response(request, response)
