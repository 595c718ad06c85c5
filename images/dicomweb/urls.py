"""DICOMweb (PS3.18) under /dicomweb/: STOW-RS now; QIDO-RS and WADO-RS with the delivery work."""


urlpatterns: list = []
