"""The demo data of the software app: the built-ins and a viewer in the catalogue, the demo institutions licensed."""

from __future__ import annotations

import io

from software.demo import seed_software
from software.models import Licence, Software
from software.processors import registry


def test_seed_software_catalogues_and_licenses_once(inst_a, inst_b):
    out = io.StringIO()
    seed_software(out, {"alpha": inst_a, "beta": inst_b})
    seed_software(out, {"alpha": inst_a, "beta": inst_b})
    count = len(registry.available()) + 1
    assert Software.objects.count() == count
    assert Licence.objects.count() == 2 * count
    viewer = Software.objects.get(kind=Software.Kind.DOWNLOADABLE)
    assert viewer.versions.get().size_bytes > 0
