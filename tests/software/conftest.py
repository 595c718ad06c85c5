"""Fixtures of the software tests: licensed institutions, volumes in the archive, a software storage per test."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread

from images.ingest import ingest_instance
from images.storage import open_instance
from software.processors import registry
from software.services import catalogue, licences
from subscribers.access import OPERATOR, Principal
from subscribers.models import Role
from tests.software.volumes import as_bytes, volume


@pytest.fixture(autouse=True)
def _software_storage_in_tmp(settings, tmp_path):
    stores = dict(settings.STORAGES)
    stores["software"] = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "software")}}
    settings.STORAGES = stores
    return tmp_path / "software"


@pytest.fixture
def store_in(db):
    def store(institution, blobs):
        sender = Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER}))
        return [ingest_instance(principal=sender, data=blob, source="upload").instance for blob in blobs]

    return store


@pytest.fixture
def ct_series(inst_a, store_in):
    """An 8-slice axial CT volume of Alpha Hospital, as stored."""
    return store_in(inst_a, as_bytes(volume("CT")))


def builtin_software(processor_id: str):
    return catalogue.ensure_processor_software(actor=OPERATOR, processor_id=processor_id)


@pytest.fixture
def license_a(inst_a):
    """License Alpha Hospital for every built-in processing type (no limits)."""

    def grant(*processor_ids, **terms):
        ids = processor_ids or tuple(registry.available())
        return [licences.grant_licence(actor=OPERATOR, institution=inst_a, software=builtin_software(p), **terms)[0] for p in ids]

    grant()
    return grant


def read_stored(instance):
    with open_instance(instance.storage_name) as fh:
        return dcmread(io.BytesIO(fh.read()))


PLUGIN_ENTRY_POINTS = """[medarchive.processors]
exploding = tests.software.plugins:ExplodingProcessor
sleepy = tests.software.plugins:SleepyProcessor
badschema = tests.software.plugins:BadSchemaProcessor
broken = tests.software.no_such_module:Nothing
"""


@pytest.fixture
def test_plugins(tmp_path):
    """A real distribution (a .dist-info with entry_points.txt) put on sys.path, as `pip install` would."""
    import sys

    site = tmp_path / "site"
    dist = site / "medarchive_test_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: medarchive-test-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS)
    sys.path.insert(0, str(site))
    try:
        yield registry.reload()
    finally:
        sys.path.remove(str(site))
        registry.reload()
