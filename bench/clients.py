"""The senders of the ingest benchmark, each timing itself: pynetdicom and storescu over C-STORE, requests over STOW-RS.

The corpus is held in memory (`load`) so that no sender waits for the disk during a run.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE

from . import processes
from .corpus import Corpus
from .medarchive import CALLING_AET

STOW_TIMEOUT = 600  # seconds for one STOW-RS request (a batch of 50 is ~26 MB)
DIMSE_TIMEOUT = 60  # seconds to wait for one C-STORE response (one takes well under a second)


@dataclass
class Loaded:
    """The corpus in memory: Part 10 bytes, parsed data sets (for C-STORE) and multipart bodies (for STOW-RS)."""

    corpus: Corpus
    data: list[bytes]
    datasets: list[Dataset]
    bodies: list[tuple[int, bytes]]  # (instances in it, multipart body)
    boundary: str

    @property
    def total_bytes(self) -> int:
        return sum(map(len, self.data))


@dataclass
class Measurement:
    protocol: str
    system: str
    instances: int
    bytes: int
    seconds: float = 0.0
    stored: int | None = None  # verified afterwards: rows / files / CountInstances
    failures: int = 0
    first_failure: str = ""
    server_cpu_seconds: float | None = None
    client_cpu_seconds: float | None = None
    error: str = ""
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and self.failures == 0 and self.stored == self.instances

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    def as_json(self) -> dict:
        return {
            **asdict(self),
            "ok": self.ok,
            "instances_per_second": round(self.instances_per_second, 2),
            "megabytes_per_second": round(self.megabytes_per_second, 2),
            "server_cpu_ms_per_instance": round(1000 * self.server_cpu_seconds / self.instances, 2) if self.server_cpu_seconds else None,
        }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- The corpus in memory -----------------------------------------------------------------------


def multipart_body(parts: list[bytes], boundary: str) -> bytes:
    """A multipart/related body of application/dicom parts (PS3.18 8.6.1.2, RFC 2387)."""
    chunks = []
    for data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def load(corpus: Corpus, batch: int) -> Loaded:
    started = time.perf_counter()
    data = [instance.path.read_bytes() for instance in corpus.instances]
    datasets = [dcmread(io.BytesIO(d)) for d in data]
    boundary = f"bench-{uuid.uuid4().hex}"
    bodies = [(len(data[i : i + batch]), multipart_body(data[i : i + batch], boundary)) for i in range(0, len(data), batch)]
    log(f"loaded {len(data)} instances ({sum(map(len, data)) / 1e6:,.0f} MB) into memory in {time.perf_counter() - started:.1f} s")
    return Loaded(corpus=corpus, data=data, datasets=datasets, bodies=bodies, boundary=boundary)


# --- Clients --------------------------------------------------------------------------------------


def send_cstore(loaded: Loaded, *, port: int, called_aet: str, measurement: Measurement, server_pid: int) -> None:
    """All instances over one association (CT and MR Image Storage, Explicit VR Little Endian only)."""
    ae = AE(ae_title=CALLING_AET)
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 30, DIMSE_TIMEOUT, DIMSE_TIMEOUT
    ae.maximum_pdu_size = 0  # no limit on what we receive; what we send is limited by the acceptor's maximum
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    cpu_before, client_before, started = processes.tree_cpu_seconds(server_pid), time.process_time(), time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called_aet)
    if not assoc.is_established:
        raise RuntimeError(f"association to {called_aet}@127.0.0.1:{port} not established (rejected or aborted)")
    # As DICOM senders do: with Nagle's algorithm on, the last segment of each object waits for a delayed ACK.
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        measurement.details["acceptor_maximum_pdu"] = assoc.acceptor.maximum_length
        for number, dataset in enumerate(loaded.datasets, start=1):
            status = assoc.send_c_store(dataset, msg_id=number % 65536)
            if not status:  # an empty data set: no response within DIMSE_TIMEOUT, or the association went away
                measurement.failures += len(loaded.datasets) - number + 1
                raise RuntimeError(
                    f"no C-STORE response for #{number} within {DIMSE_TIMEOUT} s (association established: {assoc.is_established})"
                )
            if status.Status != 0x0000:
                measurement.failures += 1
                if not measurement.first_failure:
                    measurement.first_failure = f"#{number}: status 0x{status.Status:04X} {status.get('ErrorComment', '')}"
    finally:
        if assoc.is_established:
            assoc.release()
        measurement.seconds = time.perf_counter() - started
        measurement.client_cpu_seconds = time.process_time() - client_before
        measurement.server_cpu_seconds = processes.tree_cpu_seconds(server_pid) - cpu_before


def send_storescu(corpus: Corpus, *, port: int, called_aet: str, measurement: Measurement, server_pid: int, log_path: Path) -> None:
    """The same files over one association with DCMTK's storescu (C++), as a sender that costs the machine almost nothing."""
    argv = ["storescu", "-aet", CALLING_AET, "-aec", called_aet, "-R", "-xe", "-nh", "-to", "60", "-ta", "30", "-td", str(DIMSE_TIMEOUT)]
    argv += ["+sd", "+r", "+sp", "*.dcm", "127.0.0.1", str(port), str(corpus.root)]
    # Debian's DCMTK keeps Nagle's algorithm on unless TCP_NODELAY=1 (each object would then wait ~40 ms for an ACK).
    env = {**processes.environment_without("TCP_NODELAY"), "TCP_NODELAY": "1"}
    cpu_before, started = processes.tree_cpu_seconds(server_pid), time.perf_counter()
    with open(log_path, "wb") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=3600, check=False)
    measurement.seconds = time.perf_counter() - started
    measurement.server_cpu_seconds = processes.tree_cpu_seconds(server_pid) - cpu_before
    if result.returncode != 0:
        measurement.first_failure = f"storescu exited with {result.returncode}: {processes.tail(log_path, 3)}"
    measurement.details["client"] = "storescu (DCMTK), TCP_NODELAY=1, files from the page cache"


def _failed_in_stow_response(response: requests.Response) -> tuple[int, str]:
    try:
        answer = response.json()
    except ValueError:
        return 0, ""
    failed = (answer.get("00081198") or {}).get("Value") or []
    if not failed:
        return 0, ""
    reason = (failed[0].get("00081197") or {}).get("Value") or [""]
    return len(failed), f"failure reason {reason[0]}"


def send_stow(loaded: Loaded, *, url: str, token: str = "", measurement: Measurement, server_pid: int) -> None:
    """One multipart/related POST per batch, one after another, on one keep-alive connection."""
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={loaded.boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    statuses: dict[int, int] = {}
    with requests.Session() as session:
        cpu_before, client_before, started = processes.tree_cpu_seconds(server_pid), time.process_time(), time.perf_counter()
        sent = 0
        for in_batch, body in loaded.bodies:
            response = session.post(url, data=body, headers=headers, timeout=STOW_TIMEOUT)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            # A 200 may still list failed instances (some servers answer 200 for partial success).
            failed, reason = _failed_in_stow_response(response)
            if response.status_code != 200 or failed:
                measurement.failures += failed or in_batch
                if not measurement.first_failure:
                    measurement.first_failure = f"batch at #{sent + 1}: HTTP {response.status_code} {reason or response.text[:300]}"
            sent += in_batch
        measurement.seconds = time.perf_counter() - started
        measurement.client_cpu_seconds = time.process_time() - client_before
        measurement.server_cpu_seconds = processes.tree_cpu_seconds(server_pid) - cpu_before
    measurement.details["http_statuses"] = {str(k): v for k, v in statuses.items()}
    measurement.details["requests"] = len(loaded.bodies)
