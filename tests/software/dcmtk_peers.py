"""Real DICOM peers nobody here wrote, for the polling and delivery tests: Debian's dcmtk `dcmqrscp` as a subscriber's
PACS (an archive of synthesized studies indexed with `dcmqridx`), `storescp` as the receiver products are pushed to, and
a TCP server that answers an association with junk."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

DCMTK_TOOLS = ("dcmqrscp", "dcmqridx", "storescp")
needs_dcmtk = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in DCMTK_TOOLS), reason="dcmtk is not installed (apt-get install dcmtk)"
)
PACS_AET = "SITEPACS"
RECEIVER_AET = "SITESCP"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert process.poll() is None, f"{what} exited with code {process.returncode}"
            assert time.monotonic() < deadline, f"{what} did not start listening on {port}"
            time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    """Stop a peer started in a session of its own, with the children it forked (dcmqrscp forks per association)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@dataclass
class Pacs:
    """A running dcmqrscp: AE title PACS_AET on 127.0.0.1:port, its archive in folder."""

    port: int
    folder: Path
    ae_title: str = PACS_AET
    files: list[Path] = field(default_factory=list)

    def add(self, blobs: list[bytes]) -> list[Path]:
        """Put Part 10 files into the archive and index them (dcmqrscp reads its index at each association)."""
        paths = []
        for blob in blobs:
            path = self.folder / f"file{len(self.files):05d}.dcm"
            path.write_bytes(blob)
            self.files.append(path)
            paths.append(path)
        result = subprocess.run(["dcmqridx", str(self.folder), *map(str, paths)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return paths

    def datasets(self) -> list[Dataset]:
        return [pydicom.dcmread(p) for p in self.files]


def start_pacs(tmp_path: Path, *, move_destinations: dict[str, int] | None = None) -> tuple[subprocess.Popen, Pacs]:
    """dcmqrscp with a configuration of its own (a free port, a fresh archive folder, C-MOVE destinations by AE title)."""
    folder = tmp_path / "pacs-archive"
    folder.mkdir()
    port = free_port()
    hosts = "\n".join(f"{aet} = ({aet}, 127.0.0.1, {dest_port})" for aet, dest_port in (move_destinations or {}).items())
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
        f"AETable BEGIN\n{PACS_AET} {folder} R (200, 1024mb) ANY\nAETable END\n"
    )
    process = subprocess.Popen(
        ["dcmqrscp", "-c", str(config), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, process, "dcmqrscp")
    return process, Pacs(port=port, folder=folder)


@dataclass
class Receiver:
    """A running storescp writing what it receives, bit for bit, into folder."""

    port: int
    folder: Path
    ae_title: str = RECEIVER_AET

    def received(self) -> dict[str, Dataset]:
        return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in sorted(self.folder.iterdir()))}


def start_storescp(tmp_path: Path, *, accept_all: bool = True, port: int | None = None) -> tuple[subprocess.Popen, Receiver]:
    """storescp; accept_all takes every transfer syntax dcmtk knows (+xa), else only the uncompressed ones."""
    folder = tmp_path / "received"
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = ["storescp", "-aet", RECEIVER_AET, *(["+xa"] if accept_all else []), "+B", "-od", str(folder), str(port)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_port(port, process, "storescp")
    return process, Receiver(port=port, folder=folder)


class JunkServer:
    """Accepts TCP connections and answers each with bytes that are no DICOM PDU, then closes it."""

    JUNK = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + bytes(range(256))

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.JUNK)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
