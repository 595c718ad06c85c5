"""A processing job run by a real Celery worker process (the image-processing server), started by `manage.py process`."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command

from software.models import ProcessingJob
from tests.software.conftest import read_stored
from tests.software.volumes import voxels_of

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_process_command_waits_for_the_worker_and_prints_the_product_series(
    celery_worker_process, settings, capsys, inst_a, store_in, license_a
):
    # The worker reads and writes the archive folder it was started with: store there.
    archive = celery_worker_process.storage_root / "archive"
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(archive)}},
    }
    from tests.software.volumes import as_bytes, volume

    sources = store_in(inst_a, as_bytes(volume("CT", slices=6)))
    call_command("process", "--institution", "alpha", "--type", "mip", "--timeout", "120", sources[0].series.series_instance_uid)
    out = capsys.readouterr().out.splitlines()
    job = ProcessingJob.objects.get()
    assert job.status == ProcessingJob.Status.SUCCEEDED, f"{job.error}\n{celery_worker_process.log_tail()}"
    assert job.attempts == 1 and job.started_at and job.finished_at
    [product] = job.products.all()
    assert out == [f"job {job.pk}: Maximum intensity projection 1.0, 1 item(s)", product.series_instance_uid]
    assert np.array_equal(read_stored(product.instance).pixel_array, voxels_of([read_stored(i) for i in sources]).max(axis=0))
