"""Query/retrieve in the DICOM listener, driven the way PACS and workstations do it: dcmtk's findscu, movescu (to a
storescp) and getscu, and pynetdicom.

A caller finds and retrieves only what its institution may see (its own studies, and shares while they last); a
C-MOVE goes only to a receiving AE its institution registered; instances arrive in their stored transfer syntax when the
receiver accepts it, converted losslessly when it does not.
"""

import io
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from images.dimse import query as dimse_query
from images.dimse.listener import start_listener
from images.dimse.query import Identifier, Key
from images.ingest import ingest_instance
from images.models import Instance, Study
from images.sharing.services import revoke, share
from subscribers.access import principal_for_ae
from subscribers.models import AuditEvent
from tests.dicom_files import bundled_path, make_dataset, synth_bytes, to_bytes
from tests.factories import ApplicationEntityFactory
from tests.images.test_dimse_store import AET, Listener, dataset_bytes, free_port, kept_bytes, with_new_uid

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_TOOLS = ("findscu", "movescu", "getscu", "storescp")
needs_dcmtk = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in DCMTK_TOOLS), reason="dcmtk is not installed (apt-get install dcmtk)"
)
CALLER = "ALPHAQR"  # inst_a's workstation: may send and receive
RECEIVER = "STORESCP"  # inst_a's receiving node, where a dcmtk storescp listens


@dataclass
class Archive:
    """What the tests find and retrieve: three studies of inst_a (one compressed) and one of inst_b."""

    ct: Study  # inst_a, Doe^Jane, 2026-11-02, 2 CT images
    mr: Study  # inst_a, Müller^Jürgen (ISO_IR 100), 2025-06-15, 1 MR image
    compressed: Study  # inst_a, pydicom's MR_small as JPEG 2000 lossless and RLE
    other: Study  # inst_b, Doe^John, 1 CT image


@pytest.fixture
def archive(principal_a, principal_b) -> Archive:
    def ingest(principal, objects) -> Study:
        return [ingest_instance(principal=principal, data=data, source="test") for data in objects][0].instance.study

    ct = ingest(principal_a, _series("CT", 2, patient_id="PAT-A1", patient_name="Doe^Jane"))
    latin1 = make_dataset("MR", patient_id="PAT-A2", patient_name="Müller^Jürgen", study_date=date(2025, 6, 15))
    latin1.SpecificCharacterSet = "ISO_IR 100"
    mr = ingest(principal_a, [to_bytes(latin1)])
    compressed = ingest(principal_a, [with_new_uid(bundled_path(name)) for name in ("MR_small_jp2klossless.dcm", "MR_small_RLE.dcm")])
    other = ingest(principal_b, _series("CT", 1, patient_id="PAT-B1", patient_name="Doe^John"))
    return Archive(ct=ct, mr=mr, compressed=compressed, other=other)


def _series(modality: str, count: int, **kwargs) -> list[bytes]:
    study_uid, series_uid = generate_uid(), generate_uid()
    return [synth_bytes(modality, study_uid=study_uid, series_uid=series_uid, instance_number=n + 1, **kwargs) for n in range(count)]


@pytest.fixture
def listener(transactional_db, monkeypatch) -> Listener:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", _config.STORE_RECV_CHUNKED_DATASET)
    server = start_listener(host="127.0.0.1", port=0, ae_title=AET)
    running = Listener(server)
    yield running
    # shutdown() waits up to serve_forever's 0.5 s poll; nothing here needs the port back, so don't wait for it.
    threading.Thread(target=server.shutdown, daemon=True).start()
    for assoc in server.ae.active_associations:
        assoc.abort()
    running.wait_idle()


@pytest.fixture
def caller(inst_a):
    return ApplicationEntityFactory(institution=inst_a, ae_title=CALLER, host="127.0.0.1", can_send=True, can_receive=True)


@dataclass
class Receiver:
    port: int
    folder: Path

    def received(self) -> dict[str, Dataset]:
        return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in sorted(self.folder.iterdir()))}


@pytest.fixture
def storescp(tmp_path):
    """A dcmtk Storage SCP accepting every transfer syntax it knows (+xa), writing what it receives bit for bit (+B)."""
    folder = tmp_path / "received"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", RECEIVER, "+xa", "+B", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "storescp did not start"
            time.sleep(0.02)
    yield Receiver(port, folder)
    process.terminate()
    process.wait(timeout=5)


@pytest.fixture
def receiver_ae(inst_a, storescp):
    return ApplicationEntityFactory(
        institution=inst_a, ae_title=RECEIVER, host="127.0.0.1", port=storescp.port, can_send=False, can_receive=True
    )


def dcmtk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def findscu(listener: Listener, folder: Path, *keys: str, model: str = "-S") -> list[Dataset]:
    """findscu's responses, extracted to files (-X) and read back."""
    folder.mkdir()
    run = dcmtk("findscu", model, "-aet", CALLER, "-aec", AET, "-X", "-od", str(folder), *_keys(keys), "127.0.0.1", str(listener.port))
    assert run.returncode == 0, run.stdout + run.stderr
    listener.wait_idle()
    return [pydicom.dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


def _keys(keys) -> list[str]:
    return [part for key in keys for part in ("-k", key)]


def associate(listener: Listener, *contexts, ae_title: str = CALLER, roles=(), handlers=()):
    ae = AE(ae_title=ae_title)
    for context in contexts:
        ae.add_requested_context(*context) if isinstance(context, tuple) else ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=AET, ext_neg=list(roles), evt_handlers=list(handlers))
    assert assoc.is_established
    return assoc


def identifier(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def c_find(listener: Listener, query: Dataset, *, model=StudyRootQueryRetrieveInformationModelFind, ae_title: str = CALLER):
    """(final status, matches) of one C-FIND."""
    assoc = associate(listener, model, ae_title=ae_title)
    try:
        responses = list(assoc.send_c_find(query, model))
    finally:
        assoc.release()
        listener.wait_idle()
    return responses[-1][0], [found for status, found in responses if status.Status == 0xFF00]


def c_move(listener: Listener, query: Dataset, destination: str, *, ae_title: str = CALLER) -> list[Dataset]:
    assoc = associate(listener, StudyRootQueryRetrieveInformationModelMove, ae_title=ae_title)
    try:
        return [status for status, _ in assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()
        listener.wait_idle()


def stored(study: Study) -> dict[str, Dataset]:
    return {i.sop_instance_uid: pydicom.dcmread(io.BytesIO(kept_bytes(i))) for i in study.instances.all()}


def audit(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- C-FIND -------------------------------------------------------------------------------------------------------


@needs_dcmtk
def test_findscu_finds_the_callers_studies_only_by_id_wildcard_name_and_date_range(listener, caller, archive, tmp_path):
    all_studies = findscu(
        listener,
        tmp_path / "all",
        "QueryRetrieveLevel=STUDY",
        "PatientID",
        "PatientName",
        "StudyInstanceUID",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "PatientAge",
    )
    by_name = findscu(listener, tmp_path / "name", "QueryRetrieveLevel=STUDY", "PatientName=doe*", "StudyInstanceUID")
    by_date = findscu(listener, tmp_path / "date", "QueryRetrieveLevel=STUDY", "StudyDate=20260101-20261231", "PatientID=PAT-A*")
    by_id = findscu(listener, tmp_path / "id", "QueryRetrieveLevel=STUDY", "PatientID=PAT-B1", "StudyInstanceUID")

    own = {archive.ct.study_instance_uid, archive.mr.study_instance_uid, archive.compressed.study_instance_uid}
    assert {ds.StudyInstanceUID for ds in all_studies} == own
    ct = next(ds for ds in all_studies if ds.StudyInstanceUID == archive.ct.study_instance_uid)
    assert (ct.PatientID, str(ct.PatientName), ct.StudyDate, ct.ModalitiesInStudy) == ("PAT-A1", "Doe^Jane", "20261102", "CT")
    assert ct.NumberOfStudyRelatedInstances == 2 and ct.PatientAge == ""  # not kept: returned empty
    assert (ct.QueryRetrieveLevel, ct.RetrieveAETitle, ct.SpecificCharacterSet) == ("STUDY", AET, "ISO_IR 192")
    assert [ds.StudyInstanceUID for ds in by_name] == [archive.ct.study_instance_uid]  # not inst_b's Doe^John
    assert [ds.PatientID for ds in by_date] == ["PAT-A1"]  # the MR study is from 2025
    assert by_id == []
    [event, *_] = audit("dicom.find")
    assert len(audit("dicom.find")) == 4
    assert event.detail["results"] == 3 and event.detail["level"] == "STUDY" and event.institution == caller.institution
    assert event.client_address == "127.0.0.1" and event.actor == f"AE {CALLER}@127.0.0.1"


@needs_dcmtk
def test_findscu_patient_root_lists_the_callers_patients_with_their_counts(listener, caller, archive, tmp_path, monkeypatch):
    monkeypatch.setattr(dimse_query, "PAGE", 1)  # a page per patient: paging loses and repeats nothing
    patients = findscu(
        listener,
        tmp_path / "patients",
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
        model="-P",
    )
    studies = findscu(listener, tmp_path / "studies", "QueryRetrieveLevel=STUDY", "PatientID=PAT-A2", "StudyInstanceUID", model="-P")

    found = {ds.PatientID: ds for ds in patients}
    assert set(found) == {"PAT-A1", "PAT-A2", archive.compressed.patient.patient_id}
    assert (found["PAT-A1"].NumberOfPatientRelatedStudies, found["PAT-A1"].NumberOfPatientRelatedInstances) == (1, 2)
    assert str(found["PAT-A2"].PatientName) == "Müller^Jürgen"  # stored in ISO_IR 100, answered in UTF-8
    assert [(ds.PatientID, ds.StudyInstanceUID) for ds in studies] == [("PAT-A2", archive.mr.study_instance_uid)]


def test_find_at_series_and_image_levels_answers_each_match_with_the_keys_asked(listener, caller, archive, monkeypatch):
    monkeypatch.setattr(dimse_query, "PAGE", 1)  # a page per match: paging loses and repeats nothing
    study_uid = archive.ct.study_instance_uid
    status, series = c_find(
        listener,
        identifier("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality="", NumberOfSeriesRelatedInstances=""),
    )
    series_uid = series[0].SeriesInstanceUID
    _, images = c_find(
        listener,
        identifier("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID="", InstanceNumber="", ImageType=""),
    )
    _, second = c_find(listener, identifier("IMAGE", SeriesInstanceUID=series_uid, InstanceNumber="2", SOPInstanceUID=""))
    _, foreign = c_find(listener, identifier("SERIES", StudyInstanceUID=archive.other.study_instance_uid, SeriesInstanceUID=""))
    _, latin1 = c_find(listener, identifier("STUDY", SpecificCharacterSet="ISO_IR 100", PatientName="müller*", StudyInstanceUID=""))
    _, all_series = c_find(listener, identifier("SERIES", Modality="MR", SeriesInstanceUID=""))

    assert status.Status == 0x0000 and len(series) == 1
    assert (series[0].Modality, series[0].NumberOfSeriesRelatedInstances, series[0].StudyInstanceUID) == ("CT", 2, study_uid)
    kept = {i.sop_instance_uid: i.instance_number for i in archive.ct.instances.all()}
    assert {ds.SOPInstanceUID: ds.InstanceNumber for ds in images} == kept
    assert all(list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"] for ds in images)  # from the stored object
    assert [ds.SOPInstanceUID for ds in second] == [uid for uid, number in kept.items() if number == 2]
    assert foreign == []  # inst_b's study does not exist for inst_a
    assert [(ds.StudyInstanceUID, str(ds.PatientName)) for ds in latin1] == [(archive.mr.study_instance_uid, "Müller^Jürgen")]
    assert {ds.StudyInstanceUID for ds in all_series} == {archive.mr.study_instance_uid, archive.compressed.study_instance_uid}
    assert [e.detail["results"] for e in audit("dicom.find")] == [1, 2, 1, 0, 1, 2]


def test_find_answers_any_number_of_matches_in_a_fixed_number_of_queries(caller, archive, django_assert_num_queries):
    principal = principal_for_ae(CALLER, "127.0.0.1")
    keys = [Key(tag_for_keyword(keyword), keyword, dictionary_VR(tag_for_keyword(keyword))) for keyword in dimse_query.ATTRIBUTES]

    for level, queries in (("PATIENT", 2), ("STUDY", 1), ("SERIES", 1), ("IMAGE", 1)):
        query = Identifier(root=dimse_query.PATIENT_ROOT, level=level, keys=keys)
        with django_assert_num_queries(queries):
            answers = [
                dimse_query._response(query, row, retrieve_ae_title=AET, keys=keys)
                for row in dimse_query.matches(principal, query, with_metadata=False)
            ]
        assert len(answers) == {"PATIENT": 3, "STUDY": 3, "SERIES": 3, "IMAGE": 5}[level]


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_malformed_identifiers_get_a_failure_naming_the_offending_key(listener, caller):
    no_level = Dataset()
    no_level.StudyInstanceUID = ""
    bad_date = identifier("STUDY", StudyDate="2026-01", StudyInstanceUID="")
    bad_uid = identifier("SERIES", StudyInstanceUID="1.2.x", SeriesInstanceUID="")

    statuses = [
        c_find(listener, no_level)[0],
        c_find(listener, identifier("PATIENT", PatientID=""))[0],  # no PATIENT level in Study Root
        c_find(listener, bad_date)[0],
        c_find(listener, bad_uid)[0],
    ]

    assert [s.Status for s in statuses] == [0xA900, 0xA900, 0xC000, 0xC000]
    assert [s.OffendingElement for s in statuses] == [0x00080052, 0x00080052, 0x00080020, 0x0020000D]
    assert statuses[0].ErrorComment == "QueryRetrieveLevel is required."
    assert statuses[2].ErrorComment.startswith("StudyDate: '2026-01' is not a date")
    assert all(len(s.ErrorComment) <= 64 for s in statuses)
    assert [e.outcome for e in audit("dicom.find")] == ["failure"] * 4


def test_cancel_stops_a_find_before_its_next_match(listener, caller, archive, monkeypatch):
    answer, answered, cancel_sent = dimse_query._response, [], threading.Event()

    def after_the_cancel(*args, **kwargs):
        if answered:  # every match after the first waits until the C-CANCEL is on its way, and a little more
            cancel_sent.wait(timeout=10)
            time.sleep(0.1)
        answered.append(True)
        return answer(*args, **kwargs)

    monkeypatch.setattr(dimse_query, "_response", after_the_cancel)
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(listener, model)
    responses = assoc.send_c_find(identifier("IMAGE", SOPInstanceUID=""), model, msg_id=7)
    first, _ = next(responses)
    assoc.send_c_cancel(7, query_model=model)
    cancel_sent.set()
    rest = [status.Status for status, _ in responses]
    assoc.release()
    listener.wait_idle()

    assert first.Status == 0xFF00
    assert rest[-1] == 0xFE00 and len(rest) <= 3  # of 5 visible images, at most 2 more matches went out
    [event] = audit("dicom.find")
    assert event.detail["cancelled"] is True and event.detail["results"] <= 3


def test_ae_without_any_role_may_not_query(listener, inst_a, archive):
    ApplicationEntityFactory(institution=inst_a, ae_title="ECHOONLY", host="127.0.0.1", can_send=False, can_receive=False)

    status, found = c_find(listener, identifier("STUDY", StudyInstanceUID=""), ae_title="ECHOONLY")

    assert status.Status == 0x0124 and found == []
    assert audit("dicom.find")[0].outcome == "denied"


# --- C-MOVE -------------------------------------------------------------------------------------------------------


@needs_dcmtk
def test_movescu_sends_every_instance_of_a_study_to_the_registered_receiver(listener, caller, receiver_ae, storescp, archive):
    run = dcmtk(
        "movescu", "-S", "-aet", CALLER, "-aec", AET, "-aem", RECEIVER,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.ct.study_instance_uid}",
        "127.0.0.1", str(listener.port),
    )  # fmt: skip
    listener.wait_idle()

    assert run.returncode == 0, run.stdout + run.stderr
    received = storescp.received()
    originals = {i.sop_instance_uid: kept_bytes(i) for i in archive.ct.instances.all()}
    assert set(received) == set(originals)
    for uid, original in originals.items():
        with open(received[uid].filename, "rb") as fh:
            assert dataset_bytes(fh.read()) == dataset_bytes(original)  # the data set as stored, byte for byte
    [event] = audit("dicom.move")
    assert event.outcome == "success" and event.object_id == archive.ct.study_instance_uid
    assert event.detail["destination"] == f"{RECEIVER}@127.0.0.1:{storescp.port}"
    assert (event.detail["matched"], event.detail["completed"], event.detail["failed"]) == (2, 2, 0)


def test_move_destination_must_be_a_receiving_ae_of_the_callers_institution(
    listener, caller, receiver_ae, storescp, archive, inst_a, inst_b
):
    ApplicationEntityFactory(institution=inst_b, ae_title="BETASCP", host="127.0.0.1", port=storescp.port, can_receive=True)
    ApplicationEntityFactory(institution=inst_a, ae_title="MODALITY", host="127.0.0.1", port=storescp.port, can_receive=False)
    offline = ApplicationEntityFactory(institution=inst_a, ae_title="OFFLINE", host="127.0.0.1", port=free_port(), can_receive=True)
    query = identifier("STUDY", StudyInstanceUID=archive.ct.study_instance_uid)
    destinations = ("NOBODY", "BETASCP", "MODALITY", "OFFLINE")

    statuses = {destination: c_move(listener, query, destination)[-1].Status for destination in destinations}

    assert statuses == dict.fromkeys(destinations, 0xA801)
    assert storescp.received() == {}
    assert [(e.outcome, e.detail["destination"]) for e in audit("dicom.move")] == [
        ("denied", "NOBODY"),
        ("denied", "BETASCP"),
        ("denied", "MODALITY"),
        ("failure", str(offline)),  # registered, but nothing listens there
    ]
    assert audit("dicom.move")[-1].detail["reason"].startswith("the destination could not be reached")


def test_move_of_another_institutions_study_sends_nothing(listener, caller, receiver_ae, storescp, archive):
    [final] = c_move(listener, identifier("STUDY", StudyInstanceUID=archive.other.study_instance_uid), RECEIVER)

    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0x0000, 0, 0)
    assert storescp.received() == {}
    assert audit("dicom.move")[0].detail["matched"] == 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_move_without_the_unique_key_of_its_level_is_refused(listener, caller, receiver_ae, storescp, archive):
    statuses = [
        c_move(listener, identifier("STUDY", PatientID="PAT-A1"), RECEIVER)[-1],
        c_move(listener, identifier("SERIES", StudyInstanceUID=archive.ct.study_instance_uid, SeriesInstanceUID="*"), RECEIVER)[-1],
    ]

    assert [s.Status for s in statuses] == [0xA900, 0xC000]
    assert statuses[0].ErrorComment == "StudyInstanceUID is required to retrieve at the STUDY level."
    assert storescp.received() == {}


@needs_dcmtk
def test_compressed_instances_move_in_their_stored_transfer_syntax(listener, caller, receiver_ae, storescp, archive):
    [*pending, final] = c_move(listener, identifier("STUDY", StudyInstanceUID=archive.compressed.study_instance_uid), RECEIVER)

    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2
    assert [s.NumberOfRemainingSuboperations for s in pending] == [1, 0]
    received = storescp.received()
    for uid, original in stored(archive.compressed).items():
        assert received[uid].file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert received[uid].PixelData == original.PixelData
    assert {ds.file_meta.TransferSyntaxUID for ds in received.values()} == {JPEG2000Lossless, RLELossless}
    assert audit("dicom.move")[0].detail["converted"] == 0


# --- C-GET --------------------------------------------------------------------------------------------------------


@needs_dcmtk
def test_getscu_retrieves_a_study_over_its_own_association(listener, caller, archive, tmp_path):
    folder = tmp_path / "got"
    folder.mkdir()

    run = dcmtk(
        "getscu", "-S", "-aet", CALLER, "-aec", AET, "-od", str(folder),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.ct.study_instance_uid}",
        "127.0.0.1", str(listener.port),
    )  # fmt: skip
    listener.wait_idle()

    assert run.returncode == 0, run.stdout + run.stderr
    received = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, folder.iterdir())}
    originals = stored(archive.ct)
    assert set(received) == set(originals)
    for uid, original in originals.items():
        assert received[uid].PixelData == original.PixelData and received[uid].PatientID == "PAT-A1"
    [event] = audit("dicom.get")
    assert (event.outcome, event.detail["completed"], event.detail["destination"]) == ("success", 2, f"{CALLER}@127.0.0.1")


def _c_get(listener, query: Dataset, *, ae_title=CALLER, storage=((CTImageStorage, ExplicitVRLittleEndian),)):
    """(statuses, data sets received, final identifier) of a pynetdicom C-GET proposing the storage contexts given, as
    Storage SCP."""
    received = []

    def on_store(event):
        received.append(event.dataset)
        received[-1].file_meta = event.file_meta
        return 0x0000

    model = StudyRootQueryRetrieveInformationModelGet
    roles = [build_role(sop_class, scp_role=True) for sop_class in {sop for sop, _ in storage}]
    assoc = associate(listener, model, *storage, ae_title=ae_title, roles=roles, handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        responses = list(assoc.send_c_get(query, model))
    finally:
        assoc.release()
        listener.wait_idle()
    return [status for status, _ in responses], received, responses[-1][1]


def test_get_converts_what_the_caller_does_not_accept_and_fails_what_it_cannot_take(listener, caller, archive):
    study = archive.compressed
    query = identifier("STUDY", StudyInstanceUID=study.study_instance_uid)

    statuses, received, _ = _c_get(listener, query, storage=((MRImageStorage, ExplicitVRLittleEndian),))
    refused, nothing, failures = _c_get(listener, query, storage=((CTImageStorage, ExplicitVRLittleEndian),))  # no MR context

    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 2
    originals = stored(study)
    for ds in received:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, originals[ds.SOPInstanceUID].pixel_array)  # lossless: the same pixels
    assert (refused[-1].Status, refused[-1].NumberOfFailedSuboperations, nothing) == (0xA702, 2, [])
    assert set(failures.FailedSOPInstanceUIDList) == set(originals)
    converted, failed = audit("dicom.get")
    assert (converted.detail["converted"], failed.outcome, failed.detail["failed"]) == (2, "failure", 2)


def test_get_takes_the_receive_role(listener, inst_a, archive):
    ApplicationEntityFactory(institution=inst_a, ae_title="MODALITY", host="127.0.0.1", can_send=True, can_receive=False)

    statuses, received, _ = _c_get(listener, identifier("STUDY", StudyInstanceUID=archive.ct.study_instance_uid), ae_title="MODALITY")

    assert statuses[-1].Status == 0x0124 and "Receive images" in statuses[-1].ErrorComment
    assert received == []
    assert audit("dicom.get")[0].outcome == "denied"


# --- Shares -------------------------------------------------------------------------------------------------------


def test_study_shared_with_the_callers_institution_is_found_and_moved_until_revoked(
    listener, caller, receiver_ae, storescp, archive, principal_b, inst_a
):
    given = share(principal=principal_b, study=archive.other, with_institution=inst_a)
    query = identifier("STUDY", StudyInstanceUID=archive.other.study_instance_uid)

    _, found = c_find(listener, identifier("STUDY", PatientName="Doe*", StudyInstanceUID=""))
    _, patients = c_find(
        listener,
        identifier("PATIENT", PatientID="PAT-B1", NumberOfPatientRelatedStudies=""),
        model=PatientRootQueryRetrieveInformationModelFind,
    )
    moved = c_move(listener, query, RECEIVER)[-1]
    revoke(principal=principal_b, share=given)
    _, found_after = c_find(listener, identifier("STUDY", PatientName="Doe*", StudyInstanceUID=""))
    moved_after = c_move(listener, query, RECEIVER)[-1]

    assert {ds.StudyInstanceUID for ds in found} == {archive.ct.study_instance_uid, archive.other.study_instance_uid}
    assert [(ds.PatientID, ds.NumberOfPatientRelatedStudies) for ds in patients] == [("PAT-B1", 1)]
    assert (moved.Status, moved.NumberOfCompletedSuboperations) == (0x0000, 1)
    assert set(storescp.received()) == set(archive.other.instances.values_list("sop_instance_uid", flat=True))
    assert [ds.StudyInstanceUID for ds in found_after] == [archive.ct.study_instance_uid]
    assert (moved_after.Status, moved_after.NumberOfCompletedSuboperations) == (0x0000, 0)
    assert Instance.objects.count() == 6  # nothing was stored twice: the receiver is not the archive
