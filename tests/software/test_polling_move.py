"""A DICOM polling source retrieving with C-MOVE: dcmtk's dcmqrscp sends the study to this archive's own DICOM listener
(under the archive's AE title, which the PACS knows with its address), where it arrives as any C-STORE from the
institution's registered PACS; the poll then processes it. A PACS the archive does not know is named as the reason."""

from __future__ import annotations

import threading

import pytest
from pynetdicom import _config

from images.dimse.listener import start_listener
from images.models import Instance, Study
from software.models import PollRun
from software.polling.services import poll_source
from tests.factories import ApplicationEntityFactory
from tests.software.dcmtk_peers import PACS_AET, needs_dcmtk, start_pacs, stop
from tests.software.test_polling import dated, dicom_source
from tests.software.volumes import as_bytes, volume

pytestmark = [pytest.mark.django_db(transaction=True), needs_dcmtk]


@pytest.fixture
def listener(settings, monkeypatch):
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", _config.STORE_RECV_CHUNKED_DATASET)  # restored after the test
    server = start_listener(host="127.0.0.1", port=0, ae_title=settings.DICOM_AET)
    yield server
    threading.Thread(target=server.shutdown, daemon=True).start()
    for assoc in server.ae.active_associations:
        assoc.abort()


@pytest.fixture
def pacs(tmp_path, listener, settings):
    process, running = start_pacs(tmp_path, move_destinations={settings.DICOM_AET: listener.server_address[1]})
    yield running
    stop(process)


def test_c_move_source_sends_the_study_through_the_listener_and_it_is_processed(inst_a, license_a, pacs):
    ApplicationEntityFactory(institution=inst_a, ae_title=PACS_AET, host="127.0.0.1", can_send=True, can_receive=False)
    study = dated(volume("CT", slices=4, patient_id="PAT-M1"), 1)
    pacs.add(as_bytes(study))
    source = dicom_source(inst_a, pacs, retrieve="c-move")

    run = poll_source(source_id=source.pk)

    assert (run.status, run.found, run.fetched, run.processed, run.failed, run.error) == ("done", 1, 1, 1, 0, "")
    kept = Instance.objects.filter(institution=inst_a, study__study_instance_uid=study[0].StudyInstanceUID)
    assert {i.sop_instance_uid for i in kept} == {ds.SOPInstanceUID for ds in study}
    assert {i.source for i in kept} == {"c-store"}


def test_c_move_from_a_pacs_the_archive_does_not_know_names_what_to_register(inst_a, license_a, pacs, settings):
    study = dated(volume("CT", slices=2, patient_id="PAT-M2"), 1)
    pacs.add(as_bytes(study))
    source = dicom_source(inst_a, pacs, retrieve="c-move")

    run = poll_source(source_id=source.pk)

    assert (run.status, run.found, run.fetched, run.failed) == ("done", 1, 0, 1)
    assert run.error == (
        f"1 study failed: PACS at 127.0.0.1:{pacs.port} refused the C-MOVE with status 0xA702 (the PACS must know "
        f"{settings.DICOM_AET} at this archive's DICOM address, and be registered as a sending AE title of Alpha Hospital)"
    )
    assert not Study.objects.filter(institution=inst_a).exists()
    assert PollRun.objects.count() == 1
