"""Processing types published by a test distribution on the entry-point group medarchive.processors (see conftest)."""

from __future__ import annotations

import time

from software.processors.base import Processor
from software.processors.derived import derive


def _copy(item, context, suffix: str):
    source = item.sources[0]
    return [
        derive(
            source,
            context=context,
            pixels=source.pixel_array,
            series_instance_uid=context.uid("series", source.SeriesInstanceUID),
            sop_instance_uid=context.uid("instance", source.SOPInstanceUID),
            instance_number=int(source.get("InstanceNumber") or 1),
            series_number=9000,
            series_description=f"copy {suffix}",
            references=[(source, None)],
        )
    ]


class ExplodingProcessor(Processor):
    """Copies the first image, then raises on the second item: a plugin with a bug."""

    id = "exploding"
    name = "Exploding test processor"
    version = "0.1"
    scope = "instances"

    def process(self, item, parameters, context):
        if context.item_position >= 1:
            raise RuntimeError("plugin bug")
        return _copy(item, context, "exploding")


class SleepyProcessor(Processor):
    """Copies each image, but takes its time (checking in, as processors should) after the first."""

    id = "sleepy"
    name = "Sleepy test processor"
    version = "0.1"
    scope = "instances"

    def process(self, item, parameters, context):
        if context.item_position >= 1:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                context.checkpoint()
                time.sleep(0.05)
        return _copy(item, context, "sleepy")


class BadSchemaProcessor(Processor):
    id = "badschema"
    name = "Processor with a broken schema"
    version = "0.1"
    parameters_schema = {"type": "no-such-type"}

    def process(self, item, parameters, context):
        return []
