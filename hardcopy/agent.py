"""The print agent: the device side of a film-sheet printer. It reaches the server over HTTP only, with its device
credential; fetches each open job's images by identifier, composes the sheet with the same renderer as the server,
and puts the PDF into its hot folder or pipes it to `lp -d QUEUE`, reporting progress and the outcome back."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .sheet import Tile, compose_pdf

log = logging.getLogger(__name__)


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
    def __init__(self, *, server: str, token: str, hot_folder: str | None = None, cups_queue: str | None = None, timeout: float = 60):
        if bool(hot_folder) == bool(cups_queue):
            raise ValueError("Give a hot folder or a CUPS queue.")
        if urllib.parse.urlsplit(server).scheme not in ("http", "https"):
            raise ValueError(f"The server address must start with http:// or https://, not {server!r}.")
        self.server = server.rstrip("/")
        self.token = token
        self.hot_folder = Path(hot_folder) if hot_folder else None
        self.cups_queue = cups_queue
        self.timeout = timeout

    # --- HTTP -----------------------------------------------------------------------------------------------------

    def _request(self, path: str, *, data: dict | None = None) -> tuple[bytes, str]:
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__: http or https only)
            self.server + path,
            data=json.dumps(data).encode() if data is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", "Accept": "*/*"},
            method="POST" if data is not None else "GET",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (see above)
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(body).get("error", body)
            except ValueError:
                message = body[:200]
            raise ServerRefused(error.code, message) from None

    def _json(self, path: str, data: dict | None = None) -> dict:
        return json.loads(self._request(path, data=data)[0])

    def open_jobs(self) -> list[dict]:
        return self._json("/api/v1/print/jobs")["jobs"]

    def report(self, job_id: int, state: str, reason: str = "") -> None:
        self._json(f"/api/v1/print/jobs/{job_id}/state", {"state": state, "reason": reason})

    def fetch_tile(self, job_id: int, tile: dict) -> Tile:
        uid = urllib.parse.quote(tile["sop_instance_uid"], safe="")
        data, _ = self._request(f"/api/v1/print/jobs/{job_id}/instances/{uid}/frames/{int(tile['frame'])}/rendered")
        image = Image.open(io.BytesIO(data))
        image.load()
        return Tile(image=image, annotations=tile.get("annotations") or {})

    # --- One job --------------------------------------------------------------------------------------------------

    def fetch_job(self, job_id: int) -> tuple[dict, list[Tile]]:
        job = self._json(f"/api/v1/print/jobs/{job_id}")
        return job, [self.fetch_tile(job_id, tile) for tile in job["tiles"]]

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
