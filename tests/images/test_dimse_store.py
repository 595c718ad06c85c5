"""The DICOM listener, driven the way modalities and PACS come in: dcmtk's storescu/echoscu and pynetdicom.

Objects arrive in their own transfer syntax and are kept as received; callers the access gate does not
know are rejected at association; bad objects get a DICOM failure status naming the problem.
"""

import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import pydicom
import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from images.dimse.listener import start_listener
from images.models import Instance, Series, Study
from subscribers.models import AuditEvent, Institution
from tests.conftest import stored_files
from tests.dicom_files import bundled_path, make_dataset, synth_bytes
from tests.factories import ApplicationEntityFactory, InstitutionFactory

# The listener's threads have database connections of their own: they see committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

AET = "MEDARCHIVE"
HAS_DCMTK = shutil.which("storescu") is not None and shutil.which("echoscu") is not None
# bin/test installs dcmtk; CI must never pass by skipping the tests with a real third-party peer.
if os.environ.get("CI") == "true" and not HAS_DCMTK:
    raise RuntimeError("dcmtk's storescu/echoscu are missing in CI: bin/test should have installed the dcmtk package")
needs_dcmtk = pytest.mark.skipif(not HAS_DCMTK, reason="dcmtk's storescu/echoscu are not installed (apt-get install dcmtk)")

# Real files in the transfer syntaxes scanners send, and synthesized modalities pydicom has no file of.
REAL_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "examples_ybr_color.dcm",  # JPEG Baseline, 30-frame ultrasound
    "examples_rgb_color.dcm",
]
SYNTHESIZED = {"PT": {"Radiopharmaceutical": "Fluorodeoxyglucose"}, "DX": {"KVP": 80.0}, "CR": {"ViewPosition": "PA"}}


@dataclass
class Listener:
    server: object

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def wait_idle(self, timeout: float = 10) -> None:
        """Wait until every association has ended (its audit event and log line are written when it does)."""
        deadline = time.monotonic() + timeout
        while self.server.ae.active_associations:
            assert time.monotonic() < deadline, "associations still running"
            time.sleep(0.01)


@pytest.fixture
def listen(transactional_db, monkeypatch):
    """Start listeners in this process, on free ports; the association threads see committed rows only."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", _config.STORE_RECV_CHUNKED_DATASET)  # restored after the test
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", _config.STORE_SEND_CHUNKED_DATASET)
    listeners = []

    def start(**options) -> Listener:
        listener = Listener(start_listener(host="127.0.0.1", port=0, ae_title=AET, **options))
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        # shutdown() waits up to serve_forever's 0.5 s poll; nothing here needs the port back, so don't wait for it.
        threading.Thread(target=listener.server.shutdown, daemon=True).start()
        for assoc in listener.server.ae.active_associations:
            assoc.abort()
        listener.wait_idle()


@pytest.fixture
def listener(listen) -> Listener:
    return listen()


@pytest.fixture
def storescu_ae(inst_a):
    return ApplicationEntityFactory(institution=inst_a, ae_title="STORESCU", host="127.0.0.1")


def associate(listener: Listener, *, ae_title="STORESCU", called=AET, contexts=((CTImageStorage, ExplicitVRLittleEndian),)):
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(Verification)
    for sop_class, transfer_syntax in contexts:
        ae.add_requested_context(sop_class, transfer_syntax)
    return ae.associate("127.0.0.1", listener.port, ae_title=called)


def send(listener: Listener, objects: list, **kwargs) -> list[Dataset]:
    """C-STORE each object (a Dataset or a file's path) on one association, each in its own transfer syntax; the responses."""
    datasets = [pydicom.dcmread(o, stop_before_pixels=True) if isinstance(o, str | os.PathLike) else o for o in objects]
    contexts = sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets})
    assoc = associate(listener, contexts=contexts, **kwargs)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(o) for o in objects]
    finally:
        assoc.release()
        listener.wait_idle()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dataset_bytes(part10: bytes) -> bytes:
    """What follows the file meta: the data set exactly as encoded (PS3.10 7.1; the meta starts with its group length)."""
    assert part10[128:132] == b"DICM" and part10[132:136] == b"\x02\x00\x00\x00"
    return part10[144 + int.from_bytes(part10[140:144], "little") :]


def kept_bytes(instance: Instance) -> bytes:
    with storages["archive"].open(instance.storage_name) as fh:
        return fh.read()


def with_new_uid(path) -> bytes:
    """A bundled file under a SOP Instance UID of its own (pydicom's MR variants share one), in its own transfer syntax."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def same_dataset(kept: Dataset, sent: Dataset) -> list[str]:
    """Elements that differ, ignoring what a sender re-encoding the file may drop: group lengths (PS3.5 7.2, retired)
    and Data Set Trailing Padding, which is for media only (PS3.10 7.2)."""
    differences = []
    for element in sent:
        if element.tag.element == 0x0000 or element.tag == 0xFFFCFFFC:
            continue
        if element.tag not in kept:
            differences.append(f"{element.keyword or element.tag} missing")
        elif kept[element.tag].value != element.value:
            differences.append(f"{element.keyword or element.tag} differs")
    return differences


def audit_events(action: str):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- storing ------------------------------------------------------------------------------------------


@needs_dcmtk
def test_storescu_folder_of_mixed_files_is_indexed_each_in_its_own_transfer_syntax(listener, storescu_ae, inst_a, tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir()
    for name in REAL_FILES:
        (folder / name).write_bytes(with_new_uid(bundled_path(name)))
    for modality in SYNTHESIZED:
        (folder / f"{modality}.dcm").write_bytes(synth_bytes(modality))
    sent = {p.name: pydicom.dcmread(p) for p in folder.iterdir()}
    # Each (SOP class, transfer syntax) in a context of its own, so storescu sends every file as it is.
    config = tmp_path / "asis.cfg"
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in sent.values()})
    lines = ["[[TransferSyntaxes]]"]
    lines += [f"[TS{i}]\nTransferSyntax1 = {ts}" for i, (_, ts) in enumerate(pairs)]
    lines += ["[[PresentationContexts]]", "[AsIs]"]
    lines += [f"PresentationContext{i + 1} = {sop}\\TS{i}" for i, (sop, _) in enumerate(pairs)]
    lines += ["[[Profiles]]", "[AsIs]", "PresentationContexts = AsIs"]
    config.write_text("\n".join(lines) + "\n")

    run = subprocess.run(
        [
            "storescu",
            "-aet",
            "STORESCU",
            "-aec",
            AET,
            "-xf",
            str(config),
            "AsIs",
            "+sd",
            "+r",
            "-nh",
            "127.0.0.1",
            str(listener.port),
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    listener.wait_idle()

    assert run.returncode == 0, run.stdout + run.stderr
    instances = {i.sop_instance_uid: i for i in Instance.objects.filter(institution=inst_a).select_related("series")}
    assert len(instances) == len(sent) == len(REAL_FILES) + len(SYNTHESIZED)
    for name, ds in sent.items():
        instance = instances[ds.SOPInstanceUID]
        assert instance.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID, name
        assert instance.source == "c-store" and instance.series.modality == ds.Modality
        kept = pydicom.dcmread(io.BytesIO(kept_bytes(instance)))
        assert kept.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert same_dataset(kept, ds) == [], name
        assert kept.PixelData == ds.PixelData, name  # compressed frames untouched, nothing decoded or re-encoded
    for modality, conditions in SYNTHESIZED.items():
        instance = next(i for i in instances.values() if i.series.modality == modality)
        assert {k: instance.conditions.get(k) for k in conditions} == conditions
    assert instances[sent["CT_small.dcm"].SOPInstanceUID].conditions.get("KVP") == 120.0
    [batch] = audit_events("instances.store")
    assert batch.detail["stored"] == len(sent) and batch.detail["refused"] == 0 and batch.client_address == "127.0.0.1"
    assert batch.institution_id == inst_a.pk and batch.actor == "AE STORESCU@127.0.0.1"


def test_objects_sent_as_encoded_are_kept_byte_for_byte_behind_a_file_meta(listener, storescu_ae, tmp_path):
    names = [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "examples_ybr_color.dcm",
        "MR_small_bigendian.dcm",
    ]
    originals = {}
    for name in names:
        originals[name] = with_new_uid(bundled_path(name))
        (tmp_path / name).write_bytes(originals[name])
    _config.STORE_SEND_CHUNKED_DATASET = True  # pynetdicom then sends each file's data set bytes without decoding them

    statuses = send(listener, [tmp_path / name for name in names])

    assert [s.Status for s in statuses] == [0x0000] * len(names)
    for name, original in originals.items():
        instance = Instance.objects.get(sop_instance_uid=pydicom.dcmread(io.BytesIO(original)).SOPInstanceUID)
        assert dataset_bytes(kept_bytes(instance)) == dataset_bytes(original), name


def test_in_memory_and_streamed_reception_keep_identical_files(listen, storescu_ae, inst_b):
    ApplicationEntityFactory(institution=inst_b, ae_title="BETASCU", host="127.0.0.1")
    listener = listen()
    ds = make_dataset("CT")

    send(listener, [ds])  # STORE_RECV_CHUNKED_DATASET, as the listener runs
    _config.STORE_RECV_CHUNKED_DATASET = False
    send(listener, [ds], ae_title="BETASCU")

    streamed, in_memory = Instance.objects.order_by("id")
    assert (streamed.institution_id, in_memory.institution_id) == (storescu_ae.institution_id, inst_b.pk)
    assert kept_bytes(streamed) == kept_bytes(in_memory)
    assert streamed.sha256 == in_memory.sha256


def test_same_instance_sent_twice_is_stored_once_and_acknowledged_both_times(listener, storescu_ae, tmp_path, caplog):
    caplog.set_level("INFO", logger="images.dimse")
    ds = make_dataset("CT")

    first = send(listener, [ds, ds])
    again = send(listener, [ds])

    assert [s.Status for s in first + again] == [0x0000, 0x0000, 0x0000]
    assert Instance.objects.count() == 1 and Study.objects.get().number_of_instances == 1
    assert len(stored_files(tmp_path / "archive")) == 1
    batches = audit_events("instances.store")
    assert [(b.detail.get("stored", 0), b.detail.get("already_stored", 0)) for b in batches] == [(1, 1), (0, 1)]
    association_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("association from")]
    assert len(association_lines) == 2
    assert association_lines[0].startswith("association from STORESCU@127.0.0.1 (Alpha Hospital) released after")
    assert association_lines[0].endswith("1 stored, 1 already stored, 0 replaced, 0 refused")


def test_parallel_associations_storing_one_new_study_both_succeed(listener, storescu_ae):
    study_uid, shared_series = generate_uid(), generate_uid()
    start = threading.Barrier(2)
    statuses = {}

    def sender(n: int):
        own_series = generate_uid()
        datasets = [
            make_dataset("CT", study_uid=study_uid, series_uid=shared_series, instance_number=n * 10 + 1),
            make_dataset("CT", study_uid=study_uid, series_uid=shared_series, instance_number=n * 10 + 2),
            make_dataset("CT", study_uid=study_uid, series_uid=own_series, series_number=n + 2, instance_number=n * 10 + 3),
        ]
        assoc = associate(listener)
        start.wait(timeout=10)
        statuses[n] = [assoc.send_c_store(ds).Status for ds in datasets]
        assoc.release()

    threads = [threading.Thread(target=sender, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    listener.wait_idle()

    assert statuses == {1: [0, 0, 0], 2: [0, 0, 0]}
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.number_of_instances, study.number_of_series) == (6, 3)
    assert Series.objects.get(series_instance_uid=shared_series).number_of_instances == 4
    assert len(audit_events("instances.store")) == 2


@needs_dcmtk
def test_sender_dropping_mid_object_leaves_nothing_behind(listener, storescu_ae, tmp_path, monkeypatch):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(incoming))  # where pynetdicom writes data sets as they arrive
    ds = make_dataset("CT", rows=512, cols=512)
    ds.NumberOfFrames = 40
    ds.PixelData = os.urandom(512 * 512 * 2 * 40)  # 20 MB: still arriving when the sender dies
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)

    sender = subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", AET, "127.0.0.1", str(listener.port), str(path)])
    try:
        deadline = time.monotonic() + 20
        while not any(f.stat().st_size for f in incoming.iterdir()):
            assert time.monotonic() < deadline and sender.poll() is None, "the data set never started arriving"
            time.sleep(0.01)
    finally:
        sender.kill()
        sender.wait()
    listener.wait_idle()

    assert list(incoming.iterdir()) == []
    assert Instance.objects.count() == 0 and not (tmp_path / "archive").exists()


# --- refusals per object -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_malformed_datasets_get_a_failure_naming_the_problem_and_nothing_is_stored(listener, storescu_ae, tmp_path):
    bad_uid = make_dataset("CT")
    bad_uid.SOPInstanceUID = bad_uid.file_meta.MediaStorageSOPInstanceUID = "1.2.3.04"
    no_study = make_dataset("CT")
    del no_study.StudyInstanceUID

    statuses = send(listener, [bad_uid, no_study])

    assert [s.Status for s in statuses] == [0xA900, 0xA900]
    assert statuses[0].ErrorComment.startswith("SOPInstanceUID '1.2.3.04' is not a valid UID")
    assert statuses[1].ErrorComment.startswith("StudyInstanceUID is missing")
    assert all(len(s.ErrorComment) <= 64 for s in statuses)  # LO
    assert Instance.objects.count() == 0 and Study.objects.count() == 0
    assert not (tmp_path / "archive").exists() or stored_files(tmp_path / "archive") == []
    refusals = audit_events("instance.refused")
    assert [(e.detail["code"], e.client_address) for e in refusals] == [("invalid_dataset", "127.0.0.1")] * 2
    [batch] = audit_events("instances.store")
    assert batch.detail["refused"] == 2 and batch.outcome == "failure"


def test_ae_not_allowed_to_send_is_refused_per_instance_but_may_echo(listener, inst_a):
    ApplicationEntityFactory(institution=inst_a, ae_title="VIEWER", host="127.0.0.1", can_send=False)

    [status] = send(listener, [make_dataset("CT")], ae_title="VIEWER")
    assoc = associate(listener, ae_title="VIEWER")
    echo = assoc.send_c_echo()
    assoc.release()

    assert status.Status == 0x0124 and "Register images" in status.ErrorComment
    assert echo.Status == 0x0000
    assert Instance.objects.count() == 0
    assert audit_events("instance.refused")[0].outcome == "denied"


# --- who may associate ---------------------------------------------------------------------------------


@needs_dcmtk
def test_registered_ae_can_echo_with_echoscu_and_pynetdicom(listener, storescu_ae):
    run = subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", AET, "127.0.0.1", str(listener.port)], capture_output=True, text=True, timeout=30
    )
    assoc = associate(listener)
    status = assoc.send_c_echo()
    assoc.release()

    assert run.returncode == 0, run.stdout + run.stderr
    assert status.Status == 0x0000


def test_callers_the_gate_does_not_accept_are_rejected_at_association(listener, storescu_ae, inst_a, tmp_path):
    suspended = InstitutionFactory(slug="suspended", status=Institution.Status.SUSPENDED)
    ApplicationEntityFactory(institution=suspended, ae_title="SUSPENDED", host="127.0.0.1")
    ApplicationEntityFactory(institution=inst_a, ae_title="REMOTE", host="127.0.0.2")  # we connect from 127.0.0.1
    ApplicationEntityFactory(institution=inst_a, ae_title="RETIRED", host="127.0.0.1", is_active=False)
    callers = {"NOBODY": "ae_unknown", "REMOTE": "ae_wrong_host", "RETIRED": "ae_inactive", "SUSPENDED": "institution_suspended"}
    path = tmp_path / "ct.dcm"
    path.write_bytes(synth_bytes("CT"))

    for ae_title in callers:
        assoc = associate(listener, ae_title=ae_title)
        assert assoc.is_rejected, ae_title
        rejection = assoc.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03), ae_title
        if HAS_DCMTK:
            run = subprocess.run(
                ["storescu", "-aet", ae_title, "-aec", AET, "127.0.0.1", str(listener.port), str(path)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert run.returncode != 0 and "Calling AE Title Not Recognized" in run.stdout + run.stderr, ae_title
    listener.wait_idle()

    assert Instance.objects.count() == 0 and not (tmp_path / "archive").exists()
    refusals = audit_events("dicom.association_refused")
    assert {(e.detail["calling_ae_title"], e.detail["code"]) for e in refusals} == set(callers.items())
    assert len(refusals) == len(callers) * (2 if HAS_DCMTK else 1)
    assert {(e.outcome, e.client_address) for e in refusals} == {("denied", "127.0.0.1")}
    assert {e.institution_id for e in refusals if e.detail["calling_ae_title"] == "SUSPENDED"} == {suspended.pk}


def test_wrong_called_ae_title_is_rejected_unless_any_is_allowed(listen, storescu_ae):
    strict, lenient = listen(), listen(require_called_aet=False)

    rejected = associate(strict, called="ANY-SCP")
    accepted = associate(lenient, called="ANY-SCP")
    was_accepted = accepted.is_established
    accepted.release()
    strict.wait_idle()
    lenient.wait_idle()

    assert rejected.is_rejected
    rejection = rejected.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x07)
    assert was_accepted
    assert audit_events("dicom.association_refused")[0].detail["code"] == "called_ae_wrong"


def test_associations_beyond_the_limit_are_rejected_as_transient(listen, storescu_ae):
    listener = listen(maximum_associations=1)

    first = associate(listener)
    second = associate(listener)
    first_accepted = first.is_established
    first.release()
    listener.wait_idle()

    assert first_accepted
    assert second.is_rejected
    rejection = second.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit exceeded


# --- the command ---------------------------------------------------------------------------------------


def test_dicom_listener_command_serves_until_sigint(storescu_ae, transactional_db, monkeypatch, caplog):
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", _config.STORE_RECV_CHUNKED_DATASET)
    port = free_port()
    echoed = []
    command_ended = threading.Event()

    def echo_then_stop():
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not echoed and not command_ended.is_set():
                ae = AE(ae_title="STORESCU")
                ae.add_requested_context(Verification)
                assoc = ae.associate("127.0.0.1", port, ae_title=AET)
                if assoc.is_established:
                    echoed.append(assoc.send_c_echo().Status)
                    assoc.release()
                else:
                    time.sleep(0.05)
        finally:
            if not command_ended.is_set():  # the command's handler is installed: this stops it, not pytest
                os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=echo_then_stop)
    caplog.set_level("INFO", logger="images.dimse")
    helper.start()
    try:
        call_command("dicom_listener", "--port", str(port), "--bind", "127.0.0.1")
    finally:
        command_ended.set()
        helper.join(timeout=10)

    assert echoed == [0x0000]
    assert f"DICOM listener: AE {AET} on 127.0.0.1:{port}" in caplog.text
    assert "DICOM listener stopped (SIGINT)" in caplog.text
