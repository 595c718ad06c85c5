"""DICOM network services (DIMSE): the listener that accepts associations from registered AE titles, C-STORE and C-ECHO."""
