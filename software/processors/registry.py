"""The processing types available on this server: every class on the entry-point group `medarchive.processors`.

Built-ins register themselves the same way, in pyproject.toml (installed editable by bin/_setup.sh). When the project's
own metadata is not installed (a bare checkout), their entries are read from pyproject.toml, so the built-ins are there
either way. A plugin that fails to import or declares itself wrongly is listed as unavailable, with the reason; the
server starts all the same.
"""

from __future__ import annotations

import logging
import threading
import tomllib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .base import SCOPES, Processor

GROUP = "medarchive.processors"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unavailable:
    id: str
    target: str
    reason: str


@dataclass(frozen=True)
class Registry:
    processors: dict[str, Processor]
    unavailable: dict[str, Unavailable]


_lock = threading.Lock()
_registry: Registry | None = None


def _own_entry_points() -> list[EntryPoint]:
    """The built-ins from pyproject.toml, when the project's metadata is not installed."""
    try:
        distribution("medarchive")
        return []
    except PackageNotFoundError:
        pass
    try:
        table = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][GROUP]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return []
    return [EntryPoint(name=name, value=value, group=GROUP) for name, value in table.items()]


def _declaration_problem(processor) -> str | None:
    for attribute in ("id", "name", "version", "parameters_schema", "scope"):
        if not getattr(processor, attribute, None):
            return f"it declares no {attribute}"
    if processor.scope not in SCOPES:
        return f"its scope {processor.scope!r} is not one of {', '.join(SCOPES)}"
    if not callable(getattr(processor, "process", None)):
        return "it has no process() method"
    try:
        Draft202012Validator.check_schema(processor.parameters_schema)
    except SchemaError as error:
        return f"its parameter schema is not a valid JSON schema: {error.message}"
    return None


def load() -> Registry:
    """Import every entry point of the group (once per process)."""
    processors: dict[str, Processor] = {}
    unavailable: dict[str, Unavailable] = {}
    points = {ep.name: ep for ep in _own_entry_points()}
    points.update({ep.name: ep for ep in entry_points(group=GROUP)})
    for name, point in sorted(points.items()):
        try:
            cls = point.load()
            processor = cls() if isinstance(cls, type) else cls
        except Exception as error:  # a broken plugin must not stop the server
            logger.warning("processing type %s (%s) could not be loaded: %s", name, point.value, error)
            unavailable[name] = Unavailable(name, point.value, f"it could not be loaded: {type(error).__name__}: {error}")
            continue
        problem = _declaration_problem(processor)
        if problem is None and processor.id != name:
            problem = f"it calls itself {processor.id!r} but is registered as {name!r}"
        if problem:
            logger.warning("processing type %s (%s) is unavailable: %s", name, point.value, problem)
            unavailable[name] = Unavailable(name, point.value, problem)
            continue
        processors[name] = processor
    return Registry(processors, unavailable)


def registry() -> Registry:
    global _registry
    with _lock:
        if _registry is None:
            _registry = load()
        return _registry


def reload() -> Registry:
    """Forget the loaded plugins and load them again (after installing one; the tests)."""
    global _registry
    with _lock:
        _registry = None
    return registry()


def available() -> dict[str, Processor]:
    return registry().processors


def unavailable() -> dict[str, Unavailable]:
    return registry().unavailable


def get(processor_id: str) -> Processor | None:
    return registry().processors.get(processor_id)
