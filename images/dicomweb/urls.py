"""DICOMweb (PS3.18) under /dicomweb/: STOW-RS, QIDO-RS, WADO-RS (incl. rendered and thumbnails) and WADO-URI.

Several transactions share a resource path (GET /studies searches, POST /studies stores), so each
path dispatches by method to the module that implements the transaction.
"""

from django.http import HttpResponse, HttpResponseNotAllowed
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from . import qido, rendered, wado, wado_uri
from .stow import StoreInstances

_store = StoreInstances.as_view()


def by_method(**handlers):
    """One view per path; DRF views inside do authentication and CSRF for sessions themselves."""

    @csrf_exempt
    def dispatch(request, *args, **kwargs):
        handler = handlers.get(request.method.lower())
        if handler is None and request.method == "HEAD":
            handler = handlers.get("get")
        if request.method == "OPTIONS":
            response = HttpResponse(status=200)
            response["Allow"] = ", ".join(sorted({m.upper() for m in handlers} | {"OPTIONS", "HEAD"}))
            return response
        if handler is None:
            return HttpResponseNotAllowed([m.upper() for m in handlers])
        return handler(request, *args, **kwargs)

    return dispatch


STUDY = "studies/<str:study>"
SERIES = f"{STUDY}/series/<str:series>"
INSTANCE = f"{SERIES}/instances/<str:instance>"

urlpatterns = [
    # PS3.18 10.6 QIDO-RS and 10.5 STOW-RS
    path("studies", by_method(get=qido.search_studies, post=_store), name="dicomweb-studies"),
    path("series", by_method(get=qido.search_series), name="dicomweb-all-series"),
    path("instances", by_method(get=qido.search_instances), name="dicomweb-all-instances"),
    path(f"{STUDY}/series", by_method(get=qido.search_series), name="dicomweb-study-series"),
    path(f"{STUDY}/instances", by_method(get=qido.search_instances), name="dicomweb-study-instances"),
    path(f"{SERIES}/instances", by_method(get=qido.search_instances), name="dicomweb-series-instances"),
    # PS3.18 10.4 WADO-RS (and STOW-RS to one study)
    path(STUDY, by_method(get=wado.retrieve_study, post=_store), name="dicomweb-study"),
    path(SERIES, by_method(get=wado.retrieve_series), name="dicomweb-series"),
    path(INSTANCE, by_method(get=wado.retrieve_instance), name="dicomweb-instance"),
    path(f"{STUDY}/metadata", by_method(get=wado.study_metadata), name="dicomweb-study-metadata"),
    path(f"{SERIES}/metadata", by_method(get=wado.series_metadata), name="dicomweb-series-metadata"),
    path(f"{INSTANCE}/metadata", by_method(get=wado.instance_metadata), name="dicomweb-instance-metadata"),
    path(f"{INSTANCE}/frames/<str:frames>", by_method(get=wado.retrieve_frames), name="dicomweb-frames"),
    path(f"{INSTANCE}/bulkdata/<str:tag>", by_method(get=wado.retrieve_bulkdata), name="dicomweb-bulkdata"),
    # PS3.18 10.4.1.1.3 rendered resources and 10.4.1.1.4 thumbnails
    path(f"{STUDY}/rendered", by_method(get=rendered.study_rendered), name="dicomweb-study-rendered"),
    path(f"{SERIES}/rendered", by_method(get=rendered.series_rendered), name="dicomweb-series-rendered"),
    path(f"{INSTANCE}/rendered", by_method(get=rendered.instance_rendered), name="dicomweb-instance-rendered"),
    path(f"{INSTANCE}/frames/<str:frames>/rendered", by_method(get=rendered.frames_rendered), name="dicomweb-frames-rendered"),
    path(f"{STUDY}/thumbnail", by_method(get=rendered.study_thumbnail), name="dicomweb-study-thumbnail"),
    path(f"{SERIES}/thumbnail", by_method(get=rendered.series_thumbnail), name="dicomweb-series-thumbnail"),
    path(f"{INSTANCE}/thumbnail", by_method(get=rendered.instance_thumbnail), name="dicomweb-instance-thumbnail"),
    path(f"{INSTANCE}/frames/<str:frames>/thumbnail", by_method(get=rendered.frames_thumbnail), name="dicomweb-frames-thumbnail"),
    # PS3.18 9 WADO-URI, for older viewers
    path("wado", by_method(get=wado_uri.wado), name="dicomweb-wado-uri"),
]
