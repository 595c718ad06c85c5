"""A private Orthanc for comparison: own JSON configuration, own storage folder, free ports, DICOMweb plugin.

It never touches a system Orthanc (ports 4242/8042, /var/lib/orthanc): everything lives in the
folder given, and the process is stopped when the `with` block ends (or at exit).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import requests

from . import processes

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGINS = [
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    *sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")),
]
AET = "ORTHANCBENCH"


def available() -> str | None:
    """None when Orthanc and its DICOMweb plugin can run here, else why not."""
    if not Path(ORTHANC).exists() and not shutil.which("Orthanc"):
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return None


def dicomweb_plugin() -> Path | None:
    return next((p for p in DICOMWEB_PLUGINS if p.exists()), None)


def version() -> str:
    try:
        out = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Orthanc:
    """`with Orthanc(folder) as orthanc:` — a running Orthanc with an empty store under folder."""

    def __init__(self, folder: Path, *, max_pdu: int = 16384, tcp_nodelay: bool = True, sync_storage: bool = True):
        self.folder = Path(folder).resolve()
        self.max_pdu = max_pdu
        self.tcp_nodelay = tcp_nodelay
        # False only where writes are not what is measured (bench.delivery loads its index faster without the fsyncs).
        self.sync_storage = sync_storage
        self.http_port = processes.free_port()
        self.dicom_port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()

    def configuration(self) -> dict:
        storage = self.folder / "storage"
        return {
            "Name": "medarchive-bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": AET,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomThreadsCount": 4,
            "HttpThreadsCount": 50,
            "KeepAlive": True,
            # Package defaults kept on purpose, so the comparison is with Orthanc as shipped: fsync of each
            # stored file (SyncStorageArea), MD5 of each attachment, 16 KiB maximum PDU.
            "SyncStorageArea": self.sync_storage,
            "StoreMD5ForAttachments": True,
            "MaximumPduLength": self.max_pdu,
            "SaveJobs": False,
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def __enter__(self) -> Orthanc:
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "storage").mkdir(parents=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.configuration(), indent=2))
        env = processes.environment_without("TCP_NODELAY")
        if self.tcp_nodelay:
            # Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is in the environment; with it on, every
            # C-STORE waits for a delayed ACK (~40 ms on loopback) and Orthanc's DICOM side runs 5-10x slower.
            env["TCP_NODELAY"] = "1"
        argv = [ORTHANC, "--no-jobs", str(config)]
        self.process = processes.start(argv, log=self.folder / "orthanc.log", env=env, cwd=self.folder)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}):\n{processes.tail(self.folder / 'orthanc.log')}")
            try:
                if self.session.get(f"{self.url}/system", timeout=2).ok:
                    processes.wait_for_port(self.dicom_port, process=self.process, timeout=timeout)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Orthanc did not answer within {timeout:.0f} s:\n{processes.tail(self.folder / 'orthanc.log')}")

    def statistics(self) -> dict:
        return self.session.get(f"{self.url}/statistics", timeout=60).json()

    def count_instances(self) -> int:
        return int(self.statistics()["CountInstances"])

    @property
    def stow_url(self) -> str:
        return f"{self.url}/dicom-web/studies"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def __exit__(self, *exc) -> None:
        self.session.close()
        if self.process is not None:
            processes.stop(self.process, timeout=30)
