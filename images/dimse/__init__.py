"""DICOM network services (DIMSE): the listener for registered AE titles — C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET."""
