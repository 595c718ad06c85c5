"""QIDO-RS (PS3.18 10.6): search for studies, series and instances."""

from .pending import pending

search_studies = search_series = search_instances = pending
