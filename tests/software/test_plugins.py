"""Processing types are plugins on the entry-point group medarchive.processors; a broken one never stops the server."""

from __future__ import annotations

from importlib.metadata import entry_points

from software.processors import registry
from tests.conftest import login


def test_the_built_ins_register_through_the_entry_point_group():
    names = {ep.name for ep in entry_points(group="medarchive.processors")}
    assert {"mip", "minip", "meanip", "mpr", "denoise", "clahe", "deidentify", "transcode"} <= names
    assert set(registry.available()) >= names


def test_a_plugin_that_fails_to_load_is_listed_unavailable_and_the_others_work(test_plugins, client, staff_user):
    assert "exploding" in test_plugins.processors and "sleepy" in test_plugins.processors
    assert "No module named 'tests.software.no_such_module'" in test_plugins.unavailable["broken"].reason
    assert "not a valid JSON schema" in test_plugins.unavailable["badschema"].reason
    assert "mip" in test_plugins.processors
    login(client, staff_user)
    page = client.get("/software/")
    assert page.status_code == 200
    assert 'data-testid="unavailable-broken"' in page.content.decode()
