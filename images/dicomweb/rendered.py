"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3-4)."""

from .pending import pending

study_rendered = series_rendered = instance_rendered = frames_rendered = pending
study_thumbnail = series_thumbnail = instance_thumbnail = frames_thumbnail = pending
