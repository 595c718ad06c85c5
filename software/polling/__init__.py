"""Polling of subscribers' own archives (a PACS over DICOM, or a DICOMweb endpoint) for studies to process."""
