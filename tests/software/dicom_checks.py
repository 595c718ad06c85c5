"""Independent checks of products: dciodvfy (Debian's dicom3tools) on the bytes, and a context to run processors."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import UTC, datetime

from software.processors import registry
from software.processors.base import ProcessingContext, WorkItem

DCIODVFY = shutil.which("dciodvfy")


def dciodvfy_errors(data: bytes) -> list[str]:
    """The "Error" lines dciodvfy reports for a Part 10 file (warnings are not errors)."""
    assert DCIODVFY, "dciodvfy (Debian package dicom3tools) is not installed: bin/test installs it"
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(data)
        fh.flush()
        result = subprocess.run([DCIODVFY, fh.name], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def run_processor(processor_id: str, sources, parameters=None, *, job_id: int = 1):
    processor = registry.get(processor_id)
    applied = {**processor.defaults(), **(parameters or {})}
    context = ProcessingContext(
        job_id=job_id, processor=processor, parameters=applied, created_at=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), secret=b"test-secret"
    )
    item = WorkItem("test", list(sources))
    processor.check(item)
    return processor.process(item, applied, context)
