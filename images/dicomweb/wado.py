"""WADO-RS (PS3.18 10.4): retrieve studies, series, instances, metadata, frames and bulk data."""

from .pending import pending

retrieve_study = retrieve_series = retrieve_instance = pending
study_metadata = series_metadata = instance_metadata = pending
retrieve_frames = retrieve_bulkdata = pending
