"""What a processing type is: a plugin class on the entry-point group `medarchive.processors`.

A processor declares what it is (id, name, version), the parameters it takes (a JSON schema, checked before a job is
accepted), what it accepts (modalities, SOP classes) and the unit it works on (`scope`): each instance, each series, or
the whole study. The job runner hands it one `WorkItem` at a time, with the source data sets (pixel data included), and
ingests the data sets it returns. A processor never touches the database or storage.

A third-party plugin is a class like the built-ins in this package, published in its own distribution with

    [project.entry-points."medarchive.processors"]
    my-filter = "my_package.module:MyFilter"
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code


class ProcessorError(Exception):
    """The item cannot be processed (bad input for this processor); the reason is shown to the user, other items go on."""


SCOPES = ("instances", "series", "study")


@dataclass
class WorkItem:
    """One unit of work: the source data sets of one instance, one series or one study, in archive order."""

    label: str
    sources: list[Dataset]


@dataclass
class ProcessingContext:
    """What a processor may know of the job: its identity, its parameters, and deterministic UIDs and times.

    Product UIDs come from `uid(...)`: the same job and the same parts always give the same UID, so a retried job
    produces the very same objects and the archive stores each once.
    """

    job_id: int
    processor: Processor
    parameters: dict
    created_at: datetime
    secret: bytes
    item_position: int = 0
    _check: object = field(default=None, repr=False)

    def uid(self, *parts) -> str:
        """A UID of the 2.25 form, derived from the job and parts (PS3.5 B.2: a 128-bit integer under 2.25)."""
        message = json.dumps([self.job_id, *[str(p) for p in parts]]).encode()
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()[:16]
        return f"2.25.{int.from_bytes(digest, 'big')}"

    def checkpoint(self) -> None:
        """Long loops call this between steps: raises if the job was cancelled or ran past its time limit."""
        if callable(self._check):
            self._check()

    @property
    def description(self) -> str:
        """The type, version and parameters applied, as written into each product's header."""
        return describe(self.processor, self.parameters)


def describe(processor, parameters: dict) -> str:
    return f"{processor.name} ({processor.id} {processor.version}); parameters {json.dumps(parameters, sort_keys=True)}"


class Processor:
    """Base class of processing types. Subclasses set the class attributes and implement `process`."""

    id: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    parameters_schema: ClassVar[dict] = {"type": "object", "properties": {}, "additionalProperties": False}
    modalities: ClassVar[Sequence[str]] = ()  # empty: any modality
    sop_classes: ClassVar[Sequence[str]] = ()  # empty: any SOP class with pixel data
    scope: ClassVar[str] = "instances"
    derivation_code: ClassVar[Code | None] = None
    # De-identification: products go to the requesting institution's research collection, not beside the originals.
    research_products: ClassVar[bool] = False

    def accepts(self, *, modality: str, sop_class_uid: str) -> str | None:
        """Why an object of this modality and SOP class is not for this processor (None: it is)."""
        if self.modalities and modality not in self.modalities:
            return f"{self.name} works on {', '.join(self.modalities)} images, not {modality or 'images without a modality'}."
        if self.sop_classes and sop_class_uid not in self.sop_classes:
            return f"{self.name} does not take objects of SOP class {sop_class_uid}."
        return None

    def check(self, item: WorkItem) -> None:
        """Raise ProcessorError when the item is not for this processor (by default: modality, SOP class, pixels)."""
        for ds in item.sources:
            reason = self.accepts(modality=str(ds.get("Modality", "")), sop_class_uid=str(ds.get("SOPClassUID", "")))
            if reason:
                raise ProcessorError(reason)
            if "PixelData" not in ds:
                raise ProcessorError(f"{ds.get('SOPInstanceUID', 'an object')} has no pixel data.")

    def process(self, item: WorkItem, parameters: dict, context: ProcessingContext) -> list[Dataset]:
        raise NotImplementedError

    @classmethod
    def defaults(cls) -> dict:
        """The schema's default values of top-level parameters."""
        return {name: spec["default"] for name, spec in cls.parameters_schema.get("properties", {}).items() if "default" in spec}
