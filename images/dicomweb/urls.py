"""DICOMweb (PS3.18) under /dicomweb/: STOW-RS now; QIDO-RS and WADO-RS with the delivery work."""

from django.urls import path

from .stow import StoreInstances

urlpatterns: list = [
    # PS3.18 Table 10.5.1-1: Studies and Study resources of the Store transaction.
    path("studies", StoreInstances.as_view(), name="dicomweb-studies"),
    path("studies/<str:study>", StoreInstances.as_view(), name="dicomweb-study"),
]
