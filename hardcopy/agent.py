"""The print agent: the device side of a film-sheet printer. It reaches the server over HTTP only, with its device
credential; fetches each open job's images by identifier, composes the sheet with the same renderer as the server,
and puts the PDF into its hot folder or pipes it to `lp -d QUEUE`, reporting progress and the outcome back."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tempfile
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from .sheet import Tile, compose_pdf

log = logging.getLogger(__name__)

# Images fetched at once: the server renders them in parallel (gunicorn workers and threads) while the agent waits.
FETCH_THREADS = 4


class ServerRefused(Exception):
    """The server answered with an error (401 for a revoked credential, 404 for what the device may not read)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass
class AgentResult:
    job_id: int
    state: str
    reason: str = ""
    path: str = ""


class PrintAgent:
    def __init__(
        self,
        *,
        server: str,
        token: str,
        hot_folder: str | None = None,
        cups_queue: str | None = None,
        timeout: float = 60,
        fetch_threads: int = FETCH_THREADS,
    ):
        if bool(hot_folder) == bool(cups_queue):
            raise ValueError("Give a hot folder or a CUPS queue.")
        if urllib.parse.urlsplit(server).scheme not in ("http", "https"):
            raise ValueError(f"The server address must start with http:// or https://, not {server!r}.")
        self.server = server.rstrip("/")
        self.token = token
        self.hot_folder = Path(hot_folder) if hot_folder else None
        self.cups_queue = cups_queue
        self.timeout = timeout
        self._fetchers = ThreadPoolExecutor(max_workers=max(1, fetch_threads), thread_name_prefix="print-agent-fetch")
        # One session (and its kept-alive connections) per thread: requests does not promise a session is thread-safe.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def close(self) -> None:
        self._fetchers.shutdown(wait=True)
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- HTTP -----------------------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {self.token}", "Accept": "*/*"})
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _request(self, path: str, *, data: dict | None = None) -> requests.Response:
        """The server's answer; ServerRefused for an error status, requests' errors (OSError) when it cannot be reached."""
        if data is None:
            response = self._session().get(self.server + path, timeout=self.timeout)
        else:
            response = self._session().post(self.server + path, json=data, timeout=self.timeout)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text[:200]
            raise ServerRefused(response.status_code, message)
        return response

    def _json(self, path: str, data: dict | None = None) -> dict:
        return self._request(path, data=data).json()

    def open_jobs(self) -> list[dict]:
        return self._json("/api/v1/print/jobs")["jobs"]

    def report(self, job_id: int, state: str, reason: str = "") -> None:
        self._json(f"/api/v1/print/jobs/{job_id}/state", {"state": state, "reason": reason})

    def fetch_tile(self, job_id: int, tile: dict) -> Tile:
        """One image of the job, already at the size the sheet places it: kept as the PNG the server sent."""
        uid = urllib.parse.quote(tile["sop_instance_uid"], safe="")
        data = self._request(f"/api/v1/print/jobs/{job_id}/instances/{uid}/frames/{int(tile['frame'])}/rendered").content
        image = Image.open(io.BytesIO(data))
        try:
            image.verify()  # a whole, well-formed PNG (checksums of every chunk) before it goes on film
        except Exception as error:  # like a broken connection: the job stays open and is fetched again next round
            raise OSError(f"The image {tile['sop_instance_uid']} frame {tile['frame']} arrived damaged: {error}") from None
        # verify() leaves the image unusable; this one reads the header only until its pixels are needed.
        return Tile(image=Image.open(io.BytesIO(data)), annotations=tile.get("annotations") or {}, png=data)

    # --- One job --------------------------------------------------------------------------------------------------

    def fetch_job(self, job_id: int) -> tuple[dict, list[Tile]]:
        """The job and its images, several fetched at once, in the job's order."""
        job = self._json(f"/api/v1/print/jobs/{job_id}")
        return job, list(self._fetchers.map(lambda tile: self.fetch_tile(job_id, tile), job["tiles"]))

    def output(self, job: dict, pdf: bytes) -> str:
        copies = int(job["format"].get("copies") or 1)
        if self.hot_folder is not None:
            self.hot_folder.mkdir(parents=True, exist_ok=True)
            final = self.hot_folder / f"print-job-{job['id']}.pdf"
            # Written under a temporary name and renamed, so whatever watches the folder never sees half a file.
            with tempfile.NamedTemporaryFile(dir=self.hot_folder, prefix=".partial-", suffix=".pdf", delete=False) as fh:
                fh.write(pdf)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(fh.name, final)
            return str(final)
        done = subprocess.run(
            ["lp", "-d", self.cups_queue, "-n", str(copies), "-t", f"medarchive print job {job['id']}", "-"],
            input=pdf,
            capture_output=True,
            timeout=self.timeout,
        )
        if done.returncode != 0:
            raise OSError(f"lp failed: {done.stderr.decode(errors='replace').strip() or done.returncode}")
        return done.stdout.decode(errors="replace").strip()

    def print_job(self, job_id: int) -> AgentResult:
        job, tiles = self.fetch_job(job_id)
        if job["state"] == "queued":
            self.report(job_id, "fetched")
        try:
            pdf = compose_pdf(job["format"], tiles)
            self.report(job_id, "printing")
            where = self.output(job, pdf)
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            reason = str(error) or error.__class__.__name__
            self.report(job_id, "failed", reason)
            return AgentResult(job_id, "failed", reason)
        self.report(job_id, "printed", f"Sent to {where}")
        return AgentResult(job_id, "printed", path=where)

    def run_once(self) -> list[AgentResult]:
        """Every open job, in order; one that cannot be fetched is left for the next round."""
        results = []
        for job in self.open_jobs():
            try:
                results.append(self.print_job(job["id"]))
            except ServerRefused as refused:
                if refused.status == 401:
                    raise
                log.warning("print job %s: %s", job["id"], refused)
                results.append(AgentResult(job["id"], "skipped", str(refused)))
        return results
