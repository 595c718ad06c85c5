"""Delivery speed: QIDO-RS searches, WADO-RS retrieves and rendered frames, medarchive against Orthanc and the raw disk read.

    .venv/bin/python -m bench.delivery [--instances 10000] [--large 100000] [--base 2000] [--database-url URL]

One run, one corpus, both servers (medarchive on PostgreSQL, gunicorn 2 workers x 2 threads as `manage.py serve`; a
private Orthanc with its DICOMweb plugin). The real corpus (bench.corpus, 512 x 512 CT and MR) goes to both over STOW-RS;
the index is then grown to each level with small synthetic instances (bench.synthetic) sent to Orthanc over STOW-RS
and written straight into medarchive's index (bench.bulk_index, checked against rows the real ingest made). Results go
to var/bench/results-delivery-<timestamp>.json and a markdown report on standard output (see bench/README.md).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import requests

from . import orthanc as orthanc_module
from . import processes, synthetic
from .clients import Loaded, _failed_in_stow_response, load, log, multipart_body
from .corpus import ROOT, ensure_corpus
from .ingest import machine
from .medarchive import INSTITUTION, Medarchive

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/medarchive_bench_delivery"
READER, READER_ROLES = "bench-reader", "receive"
STOW_TIMEOUT = 600
HTTP_TIMEOUT = 300
KINDS = {
    "patient": "PatientID (exact)",
    "date": "StudyDate, one-month range",
    "modality": "ModalitiesInStudy, limit=100",
}
MODALITY_LIMIT = 100
ACCEPTS = {
    "transfer-syntax=*": 'multipart/related; type="application/dicom"; transfer-syntax=*',
    "default transfer syntax": 'multipart/related; type="application/dicom"',
}
CHUNK = 1 << 20
# The synthetic load to Orthanc slows down as its SQLite index grows: ~260 instances/s at 10,000, ~180/s on average up
# to 100,000 on the reference machine. The projection for the large level uses this factor on the rate measured at the
# small one.
ORTHANC_SLOWDOWN = 0.65
GUNICORN_GC_FREEZE = Path(__file__).resolve().parent / "gunicorn_gc_freeze.py"


# --- PostgreSQL ------------------------------------------------------------------------------------------------------


class Database:
    """The benchmark's own database: created empty at the start, dropped at the end (never one whose name lacks 'bench')."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise SystemExit(f"--database-url must be a PostgreSQL URL (postgres://...), not {parts.scheme}://")
        self.url = url
        self.name = unquote(parts.path.lstrip("/"))
        if "bench" not in self.name:
            raise SystemExit(f"refusing to drop and re-create database {self.name!r}: its name must contain 'bench'")
        self.connect_args = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432,
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password) if parts.password else None,
        }

    def _connect(self, dbname: str):
        import psycopg

        return psycopg.connect(dbname=dbname, autocommit=True, **{k: v for k, v in self.connect_args.items() if v is not None})

    def create(self) -> None:
        with self._connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def execute(self, sql: str) -> list[tuple]:
        with self._connect(self.name) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def version(self) -> str:
        return self.execute("SHOW server_version")[0][0]

    def settings(self) -> dict:
        names = ("shared_buffers", "work_mem", "random_page_cost", "effective_cache_size", "synchronous_commit")
        return {name: self.execute(f"SHOW {name}")[0][0] for name in names}

    @property
    def redacted_url(self) -> str:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", self.url)


# --- Page cache ------------------------------------------------------------------------------------------------------


def drop_caches() -> bool:
    """Write dirty pages, then drop the page cache, dentries and inodes (root only); False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# --- Loading ---------------------------------------------------------------------------------------------------------


def post_batches(url: str, batches: Iterable[tuple[int, bytes]], boundary: str, *, token: str = "", connections: int = 1) -> dict:
    """STOW-RS: one multipart/related POST per batch, on `connections` keep-alive connections pulling from one queue."""
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lock, iterator = threading.Lock(), iter(batches)
    state = {"instances": 0, "failures": 0, "requests": 0, "first_failure": ""}

    def worker() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    item = next(iterator, None)
                if item is None:
                    return
                count, body = item
                response = session.post(url, data=body, headers=headers, timeout=STOW_TIMEOUT)
                failed, reason = _failed_in_stow_response(response)
                with lock:
                    state["instances"] += count
                    state["requests"] += 1
                    if response.status_code != 200 or failed:
                        state["failures"] += failed or count
                        state["first_failure"] = state["first_failure"] or f"HTTP {response.status_code} {reason or response.text[:200]}"

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state["seconds"] = round(time.perf_counter() - started, 2)
    state["instances_per_second"] = round(state["instances"] / state["seconds"], 1) if state["seconds"] else 0
    if state["failures"]:
        raise RuntimeError(f"{state['failures']} of {state['instances']} instances not stored at {url}: {state['first_failure']}")
    return state


def synthetic_batches(first: int, count: int, boundary: str, batch: int) -> Iterator[tuple[int, bytes]]:
    parts: list[bytes] = []
    for number in range(first, first + count):
        for _, _, items in synthetic.instances(synthetic.study(number)):
            parts.append(synthetic.part10(items))
            if len(parts) == batch:
                yield len(parts), multipart_body(parts, boundary)
                parts = []
    if parts:
        yield len(parts), multipart_body(parts, boundary)


def load_orthanc(server, loaded: Loaded | None, first: int, count: int, batch: int) -> dict:
    done = {}
    if loaded is not None:
        log(f"  orthanc: {len(loaded.data)} corpus instances over STOW-RS ...")
        done["corpus_stow"] = post_batches(server.stow_url, loaded.bodies, loaded.boundary)
    if count:
        log(f"  orthanc: {count * synthetic.INSTANCES_PER_STUDY} synthetic instances over STOW-RS (2 connections) ...")
        boundary = f"bench-{uuid.uuid4().hex}"
        done["synthetic_stow"] = post_batches(server.stow_url, synthetic_batches(first, count, boundary, batch), boundary, connections=2)
    statistics_ = server.statistics()
    done["counts"] = {key: int(statistics_[key]) for key in ("CountPatients", "CountStudies", "CountSeries", "CountInstances")}
    log(f"  orthanc: loaded {done['counts']}")
    return done


def load_medarchive(server: Medarchive, db: Database, loaded: Loaded | None, first: int, count: int, *, check_studies: int) -> dict:
    """The corpus (and a few synthetic studies, for the check) over STOW-RS; the other synthetic studies as bulk rows."""
    done: dict = {}
    stow_count = min(check_studies, count) if loaded is not None else 0
    if loaded is not None:
        log(f"  medarchive: {len(loaded.data)} corpus instances over STOW-RS ...")
        done["corpus_stow"] = post_batches(server.stow_url, loaded.bodies, loaded.boundary, token=server.token)
    if stow_count:
        log(f"  medarchive: {stow_count} synthetic studies over STOW-RS (the ingest's rows, for the check) ...")
        boundary = f"bench-{uuid.uuid4().hex}"
        done["synthetic_stow"] = post_batches(
            server.stow_url, synthetic_batches(first, stow_count, boundary, 100), boundary, token=server.token
        )
    if count - stow_count:
        log(f"  medarchive: {(count - stow_count) * synthetic.INSTANCES_PER_STUDY} synthetic instances as bulk index rows ...")
        out = server.run_module(
            "bench.bulk_index", "--institution", INSTITUTION, "--start", first + stow_count, "--count", count - stow_count
        )
        done["bulk_rows"] = json.loads(out.strip().splitlines()[-1])
    if stow_count:
        sample = sorted({first, first + stow_count - 1, *range(first, first + stow_count, max(1, stow_count // 10))})
        out = server.run_module("bench.bulk_index", "--institution", INSTITUTION, "--check", ",".join(map(str, sample)))
        done["bulk_rows_check"] = json.loads(out.strip().splitlines()[-1])
        if not done["bulk_rows_check"]["ok"]:
            raise RuntimeError(f"bulk rows differ from the ingest's: {done['bulk_rows_check']['differences'][:5]}")
    started = time.perf_counter()
    db.execute("VACUUM ANALYZE")
    done["vacuum_analyze_seconds"] = round(time.perf_counter() - started, 1)
    # Measurements start on a settled server: no checkpoint or dirty pages of the load still being written.
    db.execute("CHECKPOINT")
    os.sync()
    tables = {"patients": "images_patient", "studies": "images_study", "series": "images_series", "instances": "images_instance"}
    done["counts"] = {key: db.execute(f"SELECT count(*) FROM {table}")[0][0] for key, table in tables.items()}  # noqa: S608 (constant names)
    log(f"  medarchive: loaded {done['counts']}")
    return done


# --- QIDO-RS ---------------------------------------------------------------------------------------------------------


def search_plan(synthetic_studies: int, real: list[dict], samples: int, seed: int) -> dict[str, list[tuple[str, int]]]:
    """Query strings per kind, each with the number of studies it must find (computed from the generator)."""
    rng = random.Random(f"delivery-{seed}-{synthetic_studies}")
    everything = [
        {"patient_id": s.patient_id, "date": s.study_date, "modalities": set(s.series_modalities)}
        for s in synthetic.studies(0, synthetic_studies)
    ] + real
    patients = (synthetic_studies + synthetic.STUDIES_PER_PATIENT - 1) // synthetic.STUDIES_PER_PATIENT
    plan: dict[str, list[tuple[str, int]]] = {kind: [] for kind in KINDS}
    for index in range(samples):
        patient = f"{synthetic.PATIENT_PREFIX}{rng.randrange(patients):05d}"
        plan["patient"].append((f"PatientID={patient}", sum(1 for s in everything if s["patient_id"] == patient)))
        low = synthetic.FIRST_DAY + timedelta(days=rng.randrange(synthetic.DAYS - 31))
        high = low + timedelta(days=30)
        found = sum(1 for s in everything if low <= s["date"] <= high)
        plan["date"].append((f"StudyDate={low:%Y%m%d}-{high:%Y%m%d}", found))
        modality = list(synthetic.MODALITIES)[index % len(synthetic.MODALITIES)]
        found = min(MODALITY_LIMIT, sum(1 for s in everything if modality in s["modalities"]))
        plan["modality"].append((f"ModalitiesInStudy={modality}&limit={MODALITY_LIMIT}", found))
    return plan


def real_studies(loaded: Loaded) -> list[dict]:
    found = {}
    for ds in loaded.datasets:
        day = str(ds.StudyDate)
        found.setdefault(
            str(ds.StudyInstanceUID),
            {
                "patient_id": str(ds.PatientID),
                "date": datetime.strptime(day, "%Y%m%d").date(),
                "modalities": {str(ds.Modality)},
            },
        )
    return list(found.values())


class Searches:
    """Latencies of study searches and what they found, one query at a time."""

    def __init__(self):
        self.latencies: list[float] = []
        self.statuses: Counter = Counter()
        self.counts: list[int] = []
        self.sizes: list[int] = []
        self.mismatches: list[str] = []

    def run(self, endpoint: tuple, query: str, expected: int) -> None:
        """GET {base}/studies?query, timed to the last byte; the number of results is checked against expected."""
        session, base, headers = endpoint
        t0 = time.perf_counter()
        response = session.get(f"{base}/studies?{query}", headers=headers, timeout=HTTP_TIMEOUT)
        body = response.content
        self.latencies.append(time.perf_counter() - t0)
        self.statuses[response.status_code] += 1
        found = len(json.loads(body)) if response.status_code == 200 and body.strip() else 0
        self.counts.append(found)
        self.sizes.append(len(body))
        if found != expected:
            self.mismatches.append(f"{query}: {found} results, expected {expected} (HTTP {response.status_code})")

    def summary(self) -> dict:
        return {
            **latency_summary(self.latencies),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "results_mean": round(statistics.mean(self.counts), 1),
            "bytes_mean": round(statistics.mean(self.sizes)),
            "mismatches": len(self.mismatches),
            "first_mismatches": self.mismatches[:3],
        }


def measure_searches(session: requests.Session, base: str, headers: dict, plan: list[tuple[str, int]], *, max_seconds: float) -> dict:
    """GET {base}/studies?query for each query of the plan (at least 5, then until max_seconds), latency to the last byte."""
    searches = Searches()
    started = time.perf_counter()
    for query, expected in plan:
        if len(searches.latencies) >= 5 and time.perf_counter() - started > max_seconds:
            break
        searches.run((session, base, headers), query, expected)
    return searches.summary()


def latency_summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {
        "requests": len(seconds),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def search_all(servers: dict, plan: dict, warmup: dict, args) -> dict:
    """Every kind on every server: a few warm-up queries, then the plan. One server at a time, the other idle."""
    results: dict = {}
    for name, (session, base, headers) in servers.items():
        for kind in KINDS:
            for query, _ in warmup[kind]:
                session.get(f"{base}/studies?{query}", headers=headers, timeout=HTTP_TIMEOUT).content  # noqa: B018
            results.setdefault(kind, {})[name] = measure_searches(session, base, headers, plan[kind], max_seconds=args.qido_seconds)
            r = results[kind][name]
            log(
                f"    {name:10s} {kind:8s} p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms  ({r['requests']} queries, {r['mismatches']} wrong counts)"
            )
    return results


# --- WADO-RS and rendered ----------------------------------------------------------------------------------------------


def read_response(session: requests.Session, url: str, headers: dict) -> dict:
    """GET url to the last byte: status, bytes, seconds, time to the first byte and the number of multipart parts."""
    t0 = time.perf_counter()
    with session.get(url, headers=headers, stream=True, timeout=HTTP_TIMEOUT) as response:
        ttfb = time.perf_counter() - t0
        content_type = response.headers.get("Content-Type", "")
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        delimiter = f"--{match.group(1)}".encode() if match else None
        size, parts, tail = 0, 0, b""
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
            if delimiter:
                window = tail + chunk
                parts += window.count(delimiter)
                tail = window[-(len(delimiter) - 1) :]
        seconds = time.perf_counter() - t0
    return {
        "status": response.status_code,
        "bytes": size,
        "seconds": seconds,
        "ttfb_ms": round(1000 * ttfb, 1),
        "parts": max(0, parts - 1) if delimiter else None,  # the closing delimiter also starts with --boundary
        "content_type": content_type.split(";")[0],
    }


def raw_read(paths: list[Path]) -> dict:
    """The stored files read back in 1 MiB reads, one after the other: the disk's (or the page cache's) own rate."""
    buffer = bytearray(CHUNK)
    size, t0 = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                size += n
    return {"bytes": size, "seconds": time.perf_counter() - t0}


def wado_studies(loaded: Loaded, count: int) -> list[dict]:
    """`count` studies of the corpus, CT and MR alternating, with their Part 10 bytes and their instances' UIDs."""
    by_study: dict[str, dict] = {}
    for instance, ds in zip(loaded.corpus.instances, loaded.datasets, strict=True):
        study = by_study.setdefault(
            instance.study_instance_uid, {"uid": instance.study_instance_uid, "modality": instance.modality, "bytes": 0, "instances": []}
        )
        study["bytes"] += instance.size
        study["instances"].append((str(ds.SeriesInstanceUID), instance.sop_instance_uid, instance.modality))
    return list(by_study.values())[:count]


def measure_wado(servers: dict, studies: list[dict], archive: Path, can_drop: bool) -> list[dict]:
    """Whole-study retrieves (each Accept, cold then warm) on each server, and the raw read of the same stored files."""
    rows = []
    for accept_name, accept in ACCEPTS.items():
        for name, (session, base, headers) in servers.items():
            for cache in ("cold", "warm") if can_drop else ("warm",):
                rows.append({"what": "WADO-RS study", "server": name, "accept": accept_name, "cache": cache, "studies": []})
            for study in studies:
                url = f"{base}/studies/{study['uid']}"
                wanted = {**headers, "Accept": accept}
                if can_drop:
                    drop_caches()
                    rows[-2]["studies"].append(_check_retrieve(read_response(session, url, wanted), study, name))
                else:
                    read_response(session, url, wanted)  # warm it up
                rows[-1]["studies"].append(_check_retrieve(read_response(session, url, wanted), study, name))
            for row in rows[-2:] if can_drop else rows[-1:]:
                _aggregate(row)
                log(
                    f"    {name:10s} {accept_name:24s} {row['cache']}: {row['mb_per_s']:7.1f} MB/s "
                    f"(first byte after {row['ttfb_ms_median']} ms; {row['ok_studies']}/{len(studies)} complete)"
                )
    for cache in ("cold", "warm") if can_drop else ("warm",):
        row = {"what": "raw read", "server": "disk", "accept": "", "cache": cache, "studies": []}
        for study in studies:
            paths = sorted(archive.glob(f"*/{study['uid']}/*/*.dcm"))
            if cache == "cold":
                drop_caches()
            else:
                raw_read(paths)
            result = raw_read(paths)
            result.update(status=200, parts=len(paths), ok=len(paths) == len(study["instances"]) and result["bytes"] == study["bytes"])
            row["studies"].append(result)
        _aggregate(row)
        log(f"    raw read of medarchive's stored files, {cache}: {row['mb_per_s']:7.1f} MB/s")
        rows.append(row)
    return rows


def _check_retrieve(result: dict, study: dict, server: str) -> dict:
    # Complete: one part per instance, and at least the stored bytes (each part adds its headers).
    result["ok"] = result["status"] == 200 and result["parts"] == len(study["instances"]) and result["bytes"] >= study["bytes"]
    result["study_bytes"] = study["bytes"]
    return result


def _aggregate(row: dict) -> None:
    studies = row["studies"]
    seconds = sum(s["seconds"] for s in studies)
    stored = sum(s.get("study_bytes", s["bytes"]) for s in studies)
    row["mb_per_s"] = round(stored / seconds / 1e6, 1) if seconds else 0.0
    row["seconds"] = round(seconds, 2)
    row["stored_bytes"] = stored
    row["response_bytes"] = sum(s["bytes"] for s in studies)
    row["ok_studies"] = sum(1 for s in studies if s.get("ok"))
    if any("ttfb_ms" in s for s in studies):
        row["ttfb_ms_median"] = round(statistics.median(s["ttfb_ms"] for s in studies), 1)
    for s in studies:
        s["seconds"] = round(s["seconds"], 3)


def rendered_targets(studies: list[dict], count: int) -> list[tuple[str, str, str]]:
    """`count` CT slices spread over the CT studies: (study, series, instance) UIDs."""
    slices = [(s["uid"], series, sop) for s in studies if s["modality"] == "CT" for series, sop, _ in s["instances"]]
    step = max(1, len(slices) // count)
    return slices[::step][:count]


def measure_rendered(servers: dict, targets: list, cold_targets: list, can_drop: bool) -> list[dict]:
    """GET .../instances/{uid}/rendered as image/jpeg: cold (page cache dropped before each) and warm (second request)."""
    rows = []
    for name, (session, base, headers) in servers.items():
        wanted = {**headers, "Accept": "image/jpeg"}

        def get(target, wanted=wanted, session=session, base=base):
            study, series, sop = target
            t0 = time.perf_counter()
            response = session.get(f"{base}/studies/{study}/series/{series}/instances/{sop}/rendered", headers=wanted, timeout=HTTP_TIMEOUT)
            body = response.content
            return time.perf_counter() - t0, response, body

        first = None
        if can_drop:
            cold = []
            for target in cold_targets:
                drop_caches()
                seconds, response, body = get(target)
                cold.append(seconds)
            rows.append({"server": name, "cache": "cold", **latency_summary(cold)})
        for target in targets:  # the first request of each reads the file: not measured
            get(target)
        warm, statuses, sizes = [], Counter(), []
        for target in targets:
            seconds, response, body = get(target)
            warm.append(seconds)
            statuses[response.status_code] += 1
            sizes.append(len(body))
            if first is None:
                first = _image_facts(response, body)
        rows.append(
            {
                "server": name,
                "cache": "warm",
                **latency_summary(warm),
                "statuses": {str(k): v for k, v in statuses.items()},
                "jpeg_bytes_mean": round(statistics.mean(sizes)),
                "image": first,
            }
        )
        for row in rows[-2:] if can_drop else rows[-1:]:
            log(f"    {name:10s} rendered {row['cache']}: p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms")
    return rows


def _image_facts(response: requests.Response, body: bytes) -> dict:
    facts = {"status": response.status_code, "content_type": response.headers.get("Content-Type", "")}
    try:
        from PIL import Image

        with Image.open(io.BytesIO(body)) as image:
            facts.update(format=image.format, size=list(image.size), mode=image.mode)
    except Exception as exc:  # not an image: say what it was
        facts["error"] = f"{type(exc).__name__}: {body[:120]!r}"
    return facts


# --- Profiles ---------------------------------------------------------------------------------------------------------


class PySpy:
    """py-spy recording every process of a server (gunicorn's workers included) until stopped; raw collapsed stacks."""

    def __init__(self, pid: int, out: Path, rate: int = 200):
        self.out = out
        binary = Path(sys.executable).parent / "py-spy"
        self.available = binary.exists()
        self.process = None
        if self.available:
            argv = [str(binary), "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate), "--format", "raw", "-o", str(out)]
            self.process = processes.start(argv, log=out.with_suffix(".log"))
            time.sleep(1.0)  # attached before the work starts

    def stop(self) -> dict | None:
        if self.process is None:
            return None
        processes.stop(self.process, sig=signal.SIGINT, timeout=60)
        return summarize_stacks(self.out) if self.out.exists() else None


# Inclusive shares reported for each profile: (label, file fragment, function).
PROFILE_FUNCTIONS = [
    ("gunicorn: handle request (all)", "gunicorn/workers/gthread.py", "handle_request"),
    ("gunicorn: write response to socket", "gunicorn/http/wsgi.py", "write"),
    ("Django: view, middleware (get_response)", "django/core/handlers/base.py", "get_response"),
    ("token check", "subscribers/access.py", "principal_for_token"),
    ("SQL (psycopg execute)", "django/db/backends/utils.py", "_execute"),
    ("QIDO: results to DICOM JSON", "images/dicomweb/qido.py", "result"),
    ("JSON rendering", "rest_framework/renderers.py", "render"),
    ("audit event", "subscribers/audit.py", "record"),
    ("WADO: find instances (index)", "images/retrieve.py", "find_instances"),
    ("WADO: read stored file chunks", "images/retrieve.py", "instance_chunks"),
    ("WADO: multipart framing", "images/dicomweb/multipart.py", "write_multipart"),
    ("rendered: render_frame", "images/rendering/render.py", "render_frame"),
    ("rendered: decode pixels", "images/rendering/render.py", "render_image"),
    ("rendered: JPEG encode", "images/rendering/render.py", "encode"),
]


def summarize_stacks(path: Path) -> dict:
    """From py-spy's raw output ("frame;frame;... count"): samples, inclusive shares of PROFILE_FUNCTIONS, top self frames."""
    total, inclusive, leaves = 0, Counter(), Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if not any("handle_request" in f or "handle (" in f for f in frames):
            continue  # only request work: not gunicorn's arbiter or a worker waiting for connections
        total += count
        seen = set()
        names = [_split_frame(f) for f in frames]
        for label, fragment, function in PROFILE_FUNCTIONS:
            if label not in seen and any(
                (name == function or name.endswith(f".{function}")) and fragment in where for name, where in names
            ):
                inclusive[label] += count
                seen.add(label)
        leaves[_frame_name(frames[-1])] += count
    return {
        "samples": total,
        "inclusive_percent": {label: round(100 * inclusive[label] / total, 1) for label, _, _ in PROFILE_FUNCTIONS if inclusive[label]}
        if total
        else {},
        "top_self_percent": [{"frame": frame, "percent": round(100 * n / total, 1)} for frame, n in leaves.most_common(12)]
        if total
        else [],
        "file": str(path),
    }


def _split_frame(frame: str) -> tuple[str, str]:
    """("Class.function", "file:line") of a py-spy frame "Class.function (file:line)"."""
    name, _, where = frame.rpartition(" (")
    return (name, where.rstrip(")")) if name else (frame, "")


def _frame_name(frame: str) -> str:
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame
    function, filename, line = match.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{function} ({filename}:{line})"


def profile_in_process(
    server: Medarchive, token: str, plan: dict, folder: Path, *, explain: bool = True, options: tuple = (), extra_env: dict | None = None
) -> dict:
    """bench.profile_delivery in the server's environment (same database): stages, SQL, GC, EXPLAIN ANALYZE."""
    path = folder / f"profile-plan-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(plan))
    args = ["--token", token, "--plan", str(path), *options] + ([] if explain else ["--no-explain"])
    # The test client's requests name the host "testserver".
    env = {"ALLOWED_HOSTS": "127.0.0.1,localhost,testserver", **(extra_env or {})}
    out = server.run_module("bench.profile_delivery", *args, extra_env=env)
    return json.loads(out.strip().splitlines()[-1])


def qido_profile_plan(plan: dict, per_kind: int) -> dict:
    return {"qido": {kind: [query for query, _ in items[:per_kind]] for kind, items in plan.items()}}


# --- Experiments (indexes, query shapes, server settings), tried on the benchmark database and measured -------------


STUDY_ORDER_INDEX = "CREATE INDEX bench_study_date_order ON images_study (study_date DESC NULLS LAST, id DESC)"
PATIENT_ID_INDEX = "CREATE INDEX bench_patient_id ON images_patient (patient_id)"
DROP_INDEXES = ["DROP INDEX IF EXISTS bench_study_date_order", "DROP INDEX IF EXISTS bench_patient_id"]
PREPARED = {"DJANGO_SETTINGS_MODULE": "bench.settings_prepared"}

# (name, description, SQL to apply, web server options). Each change is measured against the server as shipped in
# interleaved blocks (see run_experiments), with the reader's token (receive role: own OR shared studies) and the
# sender's (register only: own studies).
EXPERIMENTS = [
    (
        "index: study order",
        "an index matching the ORDER BY of every study search; the existing study_inst_date is (institution_id, study_date "
        "DESC = NULLS FIRST, id DESC), so it can never give ORDER BY study_date DESC NULLS LAST, and it leads with "
        "institution_id, which the own-or-shared OR does not pin",
        [STUDY_ORDER_INDEX],
        {},
    ),
    (
        "index: patient_id",
        "the unique (institution_id, patient_id, issuer) cannot serve a PatientID search, because the institution is "
        "matched on the study (own OR shared), not on the patient: PostgreSQL scans every patient",
        [PATIENT_ID_INDEX],
        {},
    ),
    (
        "gc.freeze() in each worker",
        "gunicorn started directly (same 2 workers x 2 threads) with bench/gunicorn_gc_freeze.py: each worker imports the "
        "URLconf, collects and freezes its heap after start-up, so full collections stop walking start-up objects",
        [],
        {"gunicorn_config": GUNICORN_GC_FREEZE},
    ),
    (
        "prepared statements",
        "bench/settings_prepared.py: psycopg server-side binding, so statements run 5 times on a connection are prepared "
        "and no longer parsed and planned on each request",
        [],
        {"gunicorn_config": None, "extra_env": PREPARED},
    ),
    (
        "all four",
        "both indexes, gc.freeze() and prepared statements together",
        [STUDY_ORDER_INDEX, PATIENT_ID_INDEX],
        {"gunicorn_config": GUNICORN_GC_FREEZE, "extra_env": PREPARED},
    ),
]
BLOCK = 5  # queries per block; blocks alternate between the server as shipped and the change


def run_experiments(server: Medarchive, db: Database, sessions: dict, plan: dict, warmup: dict, args, folder: Path) -> list[dict]:
    """Each change against the server as shipped, paired: the plan's queries in blocks of BLOCK, alternating A-B, B-A.

    The machine is shared, so a load burst lands on both sides instead of on whichever ran later. An index is created
    for the B blocks and dropped for the A blocks (the planner sees it at once; creating it takes milliseconds at this
    size). A server change runs as a second web server on the same database, next to the unchanged one, both idle but
    for these requests.
    """
    results = []
    for name, description, statements, web in EXPERIMENTS:
        twin = None
        if web:
            twin = copy.copy(server)
            twin.http_port, twin.process = processes.free_port(), None
            twin.web(**web)
        try:
            found = {"as shipped": {}, "changed": {}}
            for who in ("reader", "sender"):
                session, base, headers = sessions[who]
                shipped = (session, base, headers)
                changed = (requests.Session(), twin.dicomweb_url, headers) if twin else shipped
                for kind in KINDS:
                    for endpoint in {id(shipped): shipped, id(changed): changed}.values():
                        # Enough requests for each of the 4 connections (2 workers x 2 threads) to run each statement 5 times.
                        for query, _ in warmup[kind] * 12:
                            endpoint[0].get(f"{endpoint[1]}/studies?{query}", headers=headers, timeout=HTTP_TIMEOUT).content  # noqa: B018
                    a, b = Searches(), Searches()
                    for index in range(0, len(plan[kind]), BLOCK):
                        block = plan[kind][index : index + BLOCK]
                        for side in ("a", "b") if (index // BLOCK) % 2 == 0 else ("b", "a"):
                            for sql in statements if side == "b" else []:
                                db.execute(sql)
                            try:
                                for query, expected in block:
                                    (a if side == "a" else b).run(shipped if side == "a" else changed, query, expected)
                            finally:
                                for sql in DROP_INDEXES if statements and side == "b" else []:
                                    db.execute(sql)
                    found["as shipped"].setdefault(who, {})[kind] = a.summary()
                    found["changed"].setdefault(who, {})[kind] = b.summary()
            entry = {"experiment": name, "description": description, "sql": statements, "server": {k: str(v) for k, v in web.items()}}
            entry["results"] = found
            if statements and not web:
                for sql in statements:
                    db.execute(sql)
                try:
                    for who, token in (("reader", sessions["reader"][2]["Authorization"]), ("sender", server.token)):
                        token = token.removeprefix("Bearer ")
                        plans = profile_in_process(server, token, qido_profile_plan(plan, 2), folder).get("qido", {})
                        entry[f"explain_{who}"] = {kind: r.get("explain", []) for kind, r in plans.items()}
                finally:
                    for sql in DROP_INDEXES:
                        db.execute(sql)
            results.append(entry)
            log(
                f"    {name}: p50 ms as shipped -> changed: "
                + "; ".join(
                    f"{who} " + ", ".join(f"{k} {found['as shipped'][who][k]['p50_ms']:.0f}->{r['p50_ms']:.0f}" for k, r in by.items())
                    for who, by in found["changed"].items()
                )
            )
        finally:
            if twin is not None:
                twin.stop()
    return results


# --- Report -----------------------------------------------------------------------------------------------------------


def _num(value, digits=1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(orthanc_value, medarchive_value, digits=2) -> str:
    """How many times faster medarchive is (Orthanc's time / medarchive's, or medarchive's rate / Orthanc's)."""
    if not orthanc_value or not medarchive_value:
        return "—"
    return f"{orthanc_value / medarchive_value:.{digits}f}"


def markdown(results: dict) -> str:
    lines = []
    levels = results["levels"]
    lines.append("### QIDO-RS study search (latency to the last byte, one query at a time on a keep-alive connection)\n")
    lines.append(
        "| instances (studies) | search | medarchive p50 ms | p95 ms | Orthanc p50 ms | p95 ms | ratio to Orthanc (p50) | results | counts ok |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for level in levels:
        for kind, label in KINDS.items():
            by = level.get("qido", {}).get(kind, {})
            m, o = by.get("medarchive"), by.get("orthanc")
            ok = all(r and r["mismatches"] == 0 for r in (m, o) if r is not None)
            lines.append(
                f"| {level['instances']:,} ({level['studies']:,}) | {label} | {_num(m and m['p50_ms'])} | {_num(m and m['p95_ms'])} "
                f"| {_num(o and o['p50_ms'])} | {_num(o and o['p95_ms'])} | {_ratio(o and o['p50_ms'], m and m['p50_ms'])} "
                f"| {_num(m and m['results_mean'], 0)} | {'yes' if ok else 'NO'} |"
            )
    wado = results.get("wado", [])
    if wado:
        lines.append("\n### WADO-RS whole-study retrieve and the raw read of the same stored files\n")
        lines.append(
            "| retrieve | Accept | cache | medarchive MB/s | Orthanc MB/s | raw read MB/s | ratio to Orthanc | ratio to raw read | first byte ms (medarchive / Orthanc) | complete |"
        )
        lines.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        raw = {row["cache"]: row for row in wado if row["server"] == "disk"}
        for accept in ACCEPTS:
            for cache in ("cold", "warm"):
                m = next((r for r in wado if r["server"] == "medarchive" and r["accept"] == accept and r["cache"] == cache), None)
                o = next((r for r in wado if r["server"] == "orthanc" and r["accept"] == accept and r["cache"] == cache), None)
                if m is None and o is None:
                    continue
                r = raw.get(cache)
                studies = len((m or o)["studies"])
                complete = all(x is None or x["ok_studies"] == studies for x in (m, o))
                lines.append(
                    f"| {studies} studies | {accept} | {cache} | {_num(m and m['mb_per_s'])} | {_num(o and o['mb_per_s'])} "
                    f"| {_num(r and r['mb_per_s'])} | {_ratio(m and m['mb_per_s'], o and o['mb_per_s'])} "
                    f"| {_ratio(m and m['mb_per_s'], r and r['mb_per_s'], 3)} "
                    f"| {_num(m and m.get('ttfb_ms_median'), 0)} / {_num(o and o.get('ttfb_ms_median'), 0)} | {'yes' if complete else 'NO'} |"
                )
    rendered = results.get("rendered", [])
    if rendered:
        lines.append("\n### Rendered frame: GET .../instances/{uid}/rendered, Accept image/jpeg, one 512 x 512 CT slice\n")
        lines.append("| cache | medarchive p50 ms | p95 ms | Orthanc p50 ms | p95 ms | ratio to Orthanc (p50) | requests |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for cache in ("cold", "warm"):
            m = next((r for r in rendered if r["server"] == "medarchive" and r["cache"] == cache), None)
            o = next((r for r in rendered if r["server"] == "orthanc" and r["cache"] == cache), None)
            if m is None and o is None:
                continue
            lines.append(
                f"| {cache} | {_num(m and m['p50_ms'])} | {_num(m and m['p95_ms'])} | {_num(o and o['p50_ms'])} | {_num(o and o['p95_ms'])} "
                f"| {_ratio(o and o['p50_ms'], m and m['p50_ms'])} | {(m or o)['requests']} |"
            )
    experiments = results.get("experiments", [])
    if experiments:
        lines.append(
            f"\n### Changes tried at {levels[-1]['instances']:,} instances: medarchive p50 and p95 ms, as shipped -> changed, "
            f"measured in interleaved blocks of {BLOCK} queries (reader: receive role, own OR shared studies; sender: register "
            "only, own studies)\n"
        )
        lines.append("| change | " + " | ".join(f"{who} {kind}" for who in ("reader", "sender") for kind in KINDS) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in range(2 * len(KINDS))) + " |")
        for e in experiments:
            for stat in ("p50_ms", "p95_ms"):
                cells = []
                for who in ("reader", "sender"):
                    for kind in KINDS:
                        a = e["results"]["as shipped"].get(who, {}).get(kind)
                        b = e["results"]["changed"].get(who, {}).get(kind)
                        cells.append(f"{a[stat]:.0f} -> {b[stat]:.0f}" if a and b else "—")
                lines.append(f"| {e['experiment']} ({stat[:3]}) | " + " | ".join(cells) + " |")
    profiles = results.get("profiles", {})
    columns = [(f"QIDO {kind}", (profiles.get("qido_in_process") or {}).get(kind)) for kind in KINDS]
    columns += [("WADO-RS study, to first byte", profiles.get("wado_in_process")), ("rendered", profiles.get("rendered_in_process"))]
    columns = [(label, p) for label, p in columns if p]
    if columns:
        lines.append("\n### Where medarchive's time goes (in-process, ms per request; stages exclusive, GC pauses inside them)\n")
        lines.append("| stage | " + " | ".join(label for label, _ in columns) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in columns) + " |")
        stages = []
        for _, p in columns:
            stages += [stage for stage in p["stages_ms_mean"] if stage not in stages]
        for stage in stages:
            lines.append(f"| {stage} | " + " | ".join(_num(p["stages_ms_mean"].get(stage), 2) for _, p in columns) + " |")
        lines.append("| **total (mean)** | " + " | ".join(_num(p["wall_ms_mean"], 2) for _, p in columns) + " |")
        lines.append("| of which GC pauses | " + " | ".join(_num(p["gc_ms_mean"], 2) for _, p in columns) + " |")
        lines.append("| SQL statements | " + " | ".join(_num(p["statements"], 0) for _, p in columns) + " |")
    variants = [
        ("as shipped", profiles.get("qido_in_process")),
        ("gc.freeze() after the first request", profiles.get("qido_in_process_gc_frozen")),
        ("prepared statements (bench/settings_prepared.py)", profiles.get("qido_in_process_prepared")),
    ]
    variants = [(label, p) for label, p in variants if p]
    if len(variants) > 1:
        lines.append("\n### QIDO-RS in-process with the two server-side changes (ms per request: mean, GC pauses, SQL stage)\n")
        lines.append("| variant | " + " | ".join(f"{kind}: mean / GC / SQL" for kind in KINDS) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in KINDS) + " |")
        for label, p in variants:
            cells = []
            for kind in KINDS:
                r = p.get(kind)
                sql = r and r["stages_ms_mean"].get("SQL: driver + PostgreSQL")
                cells.append(f"{r['wall_ms_mean']:.1f} / {r['gc_ms_mean']:.1f} / {sql:.1f}" if r else "—")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- The run ----------------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10000, help="instances at the first level (default %(default)s)")
    parser.add_argument("--large", type=int, default=100000, help="instances at the second level (default %(default)s; 0: none)")
    parser.add_argument("--base", type=int, default=2000, help="real 512 x 512 corpus instances sent over STOW-RS (default %(default)s)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL database for medarchive, DROPPED and re-created at the start and dropped at the end; its name must "
        "contain 'bench' (default %(default)s)",
    )
    parser.add_argument("--qido-samples", type=int, default=30, help="queries per search kind, server and level (default %(default)s)")
    parser.add_argument("--qido-seconds", type=float, default=20, help="stop a kind after this many seconds (at least 5 queries)")
    parser.add_argument("--wado-studies", type=int, default=4, help="corpus studies retrieved whole (default %(default)s)")
    parser.add_argument("--rendered", type=int, default=40, help="warm rendered requests per server (default %(default)s)")
    parser.add_argument("--rendered-cold", type=int, default=10, help="cold rendered requests per server (default %(default)s)")
    parser.add_argument(
        "--check-studies", type=int, default=20, help="synthetic studies sent to medarchive over STOW-RS to check the bulk rows"
    )
    parser.add_argument("--load-budget", type=float, default=600, help="seconds allowed for loading the large level into Orthanc; "
                        "when the projection from the first level exceeds it, the large level becomes 50,000 instances (default %(default)s)")  # fmt: skip
    parser.add_argument("--skip-experiments", action="store_true", help="leave out the index and gc experiments")
    parser.add_argument("--skip-profiles", action="store_true", help="leave out py-spy and the in-process QIDO profile")
    parser.add_argument("--keep", action="store_true", help="keep the database and the servers' folders")
    return parser.parse_args(argv)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    missing = orthanc_module.available()
    if missing:
        raise SystemExit(missing)
    if (args.instances - args.base) % synthetic.INSTANCES_PER_STUDY or (
        args.large and (args.large - args.base) % synthetic.INSTANCES_PER_STUDY
    ):
        raise SystemExit(f"--instances and --large minus --base must be multiples of {synthetic.INSTANCES_PER_STUDY}")
    if args.large and args.large <= args.instances:
        raise SystemExit("--large must be above --instances (or 0)")
    run_started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = ROOT / f"delivery-{stamp}"
    folder.mkdir(parents=True)
    db = Database(args.database_url)
    corpus = ensure_corpus(args.base, log=log)
    loaded = load(corpus, 50)
    results: dict = {
        "benchmark": "delivery",
        "started": stamp,
        "command": re.sub(
            r"://([^:/@]*):[^@]*@",
            r"://\1:***@",
            " ".join([".venv/bin/python", "-m", "bench.delivery", *(argv if argv is not None else sys.argv[1:])]),
        ),
        "machine": machine(),
        "corpus": {"folder": str(corpus.root), "instances": len(corpus.instances), "studies": corpus.studies, "bytes": loaded.total_bytes},
        "synthetic": {
            "instances_per_study": synthetic.INSTANCES_PER_STUDY,
            "studies_per_patient": synthetic.STUDIES_PER_PATIENT,
            "modalities": synthetic.WEIGHTS,
            "dates": f"{synthetic.FIRST_DAY} + {synthetic.DAYS} days",
        },
        "levels": [],
        "logs": str(folder),
        "notes": [],
    }
    can_drop = drop_caches()
    if not can_drop:
        results["notes"].append("the page cache could not be dropped (not root?): cold measurements left out")
    server = Medarchive(folder / "medarchive", database_url=db.url)
    real = real_studies(loaded)
    ok = True
    try:
        log(f"database {db.redacted_url}: created afresh")
        db.create()
        results["database"] = {"url": db.redacted_url, "version": db.version(), "settings": db.settings()}
        with orthanc_module.Orthanc(folder / "orthanc", sync_storage=False) as orthanc:
            log("medarchive: migrate, institution, members, tokens ...")
            server.prepare()
            reader_token = server.add_member(READER, READER_ROLES)
            server.web()
            results["servers"] = {
                "medarchive": "manage.py serve --no-worker --no-dicom (gunicorn 2 workers x 2 threads), PostgreSQL",
                "orthanc": f"{orthanc_module.version()} + DICOMweb plugin, SQLite index, SyncStorageArea off (loading only; reads unaffected)",
            }
            common = {"Accept": "application/dicom+json", "Accept-Encoding": "identity"}
            sessions = {
                "medarchive": (requests.Session(), server.dicomweb_url, {**common, "Authorization": f"Bearer {reader_token}"}),
                "orthanc": (requests.Session(), orthanc.dicomweb_url, dict(common)),
            }
            experiment_sessions = {
                "reader": sessions["medarchive"],
                "sender": (requests.Session(), server.dicomweb_url, {**common, "Authorization": f"Bearer {server.token}"}),
            }
            small_studies = (args.instances - args.base) // synthetic.INSTANCES_PER_STUDY
            level_plans = [(args.instances, 0, small_studies, True)]
            if args.large:
                large_studies = (args.large - args.base) // synthetic.INSTANCES_PER_STUDY
                level_plans.append((args.large, small_studies, large_studies - small_studies, False))
            for index, (instances, first, count, with_corpus) in enumerate(level_plans):
                if index == 1:
                    instances, count = _fit_large_level(results, args, instances, first, count)
                level = {"instances": instances, "studies": corpus.studies + first + count, "synthetic_studies": first + count}
                results["levels"].append(level)
                log(f"level {instances:,} instances: loading both servers ...")
                started = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    to_orthanc = pool.submit(load_orthanc, orthanc, loaded if with_corpus else None, first, count, 1000)
                    to_medarchive = pool.submit(
                        load_medarchive, server, db, loaded if with_corpus else None, first, count, check_studies=args.check_studies
                    )
                    level["load"] = {"orthanc": to_orthanc.result(), "medarchive": to_medarchive.result()}
                level["load_seconds"] = round(time.perf_counter() - started, 1)
                _verify_counts(level)
                plan = search_plan(first + count, real, args.qido_samples, 1)
                warmup = {kind: items[:2] for kind, items in search_plan(first + count, real, 2, 2).items()}
                log(f"level {instances:,}: QIDO-RS ...")
                level["load_average"] = round(os.getloadavg()[0], 2)
                level["qido"] = search_all(sessions, plan, warmup, args)
                if index == 0:
                    studies = wado_studies(loaded, args.wado_studies)
                    log(
                        f"WADO-RS: {len(studies)} studies of {len(studies[0]['instances'])} instances ({studies[0]['bytes'] / 1e6:.0f} MB each) ..."
                    )
                    results["wado"] = measure_wado(sessions, studies, server.archive, can_drop)
                    targets = rendered_targets(studies, args.rendered + args.rendered_cold)
                    log(f"rendered: {len(targets)} CT slices ...")
                    results["rendered"] = measure_rendered(
                        sessions, targets[: args.rendered], targets[args.rendered :] if can_drop else [], can_drop
                    )
                    if not args.skip_profiles:
                        results["profiles"] = _profile_retrieval(server, sessions["medarchive"], studies, targets, folder)
                        log("profiling WADO-RS (to the first byte) and rendered in-process ...")
                        retrieval = profile_in_process(
                            server, reader_token, {"wado": [s["uid"] for s in studies], "rendered": targets[:20]}, folder
                        )
                        results["profiles"].update({f"{key}_in_process": value for key, value in retrieval.items()})
                if index == len(level_plans) - 1:
                    if not args.skip_profiles:
                        log("profiling QIDO-RS in-process (stages, SQL, GC, EXPLAIN ANALYZE) and under py-spy ...")
                        profiles = results.setdefault("profiles", {})
                        qido_plan = qido_profile_plan(plan, 20)
                        profiles["qido_in_process"] = profile_in_process(server, reader_token, qido_plan, folder).get("qido")
                        # The same requests with the two server-side changes that act on Python and on PostgreSQL's planning.
                        profiles["qido_in_process_gc_frozen"] = profile_in_process(
                            server, reader_token, qido_plan, folder, explain=False, options=("--gc-freeze",)
                        ).get("qido")
                        profiles["qido_in_process_prepared"] = profile_in_process(
                            server, reader_token, qido_plan, folder, explain=False, extra_env=PREPARED
                        ).get("qido")
                        spy = PySpy(server.process.pid, folder / "py-spy-qido.txt")
                        search_all({"medarchive": sessions["medarchive"]}, plan, warmup, argparse.Namespace(qido_seconds=10))
                        results["profiles"]["qido_py_spy"] = spy.stop()
                    if not args.skip_experiments:
                        log("experiments: indexes, query shape (register-only token), gc.freeze ...")
                        results["experiments"] = run_experiments(server, db, experiment_sessions, plan, warmup, args, folder)
    except BaseException as exc:
        ok = False
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    finally:
        server.stop()
        processes.stop_all()
        if not args.keep:
            try:
                db.drop()
                log(f"database {db.name} dropped")
            except Exception as exc:  # the report matters more than the clean-up
                log(f"could not drop database {db.name}: {exc}")
            subprocess.run(["rm", "-rf", str(folder / "orthanc" / "storage"), str(server.archive)], check=False)
    results["seconds"] = round(time.perf_counter() - run_started, 1)
    out = ROOT / f"results-delivery-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    print(f"\nrun time {results['seconds'] / 60:.1f} min; results: {out}")
    return 0 if ok and _all_ok(results) else 1


def _fit_large_level(results: dict, args, instances: int, first: int, count: int) -> tuple[int, int]:
    """The large level as asked, or 50,000 instances when loading Orthanc would take longer than --load-budget."""
    rate = results["levels"][0]["load"]["orthanc"].get("synthetic_stow", {}).get("instances_per_second") or 0
    needed = count * synthetic.INSTANCES_PER_STUDY
    projected = needed / (rate * ORTHANC_SLOWDOWN) if rate else float("inf")
    results["large_level_projection"] = {
        "orthanc_rate_at_first_level": rate,
        "instances_to_load": needed,
        "projected_seconds": round(projected),
    }
    if projected <= args.load_budget or instances <= 50000:
        return instances, count
    smaller = 50000
    note = (
        f"the large level is {smaller:,} instances, not {instances:,}: loading {needed:,} small instances into Orthanc was projected "
        f"at {projected / 60:.0f} min ({rate:.0f}/s at the first level, x{ORTHANC_SLOWDOWN} as its index grows), over --load-budget "
        f"{args.load_budget / 60:.0f} min"
    )
    results["notes"].append(note)
    log(f"  {note}")
    return smaller, (smaller - args.base) // synthetic.INSTANCES_PER_STUDY - first


def _verify_counts(level: dict) -> None:
    orthanc = level["load"]["orthanc"]["counts"]["CountInstances"]
    medarchive = level["load"]["medarchive"]["counts"]["instances"]
    if orthanc != level["instances"] or medarchive != level["instances"]:
        raise RuntimeError(f"level {level['instances']}: Orthanc holds {orthanc} instances, medarchive {medarchive}")


def _profile_retrieval(server: Medarchive, medarchive_session, studies: list[dict], targets: list, folder: Path) -> dict:
    """py-spy over medarchive's workers during warm whole-study retrieves, then during warm rendered requests."""
    session, base, headers = medarchive_session
    found = {}
    log("profiling WADO-RS and rendered under py-spy ...")
    spy = PySpy(server.process.pid, folder / "py-spy-wado.txt")
    for study in studies * 3:
        read_response(session, f"{base}/studies/{study['uid']}", {**headers, "Accept": ACCEPTS["transfer-syntax=*"]})
    found["wado_py_spy"] = spy.stop()
    spy = PySpy(server.process.pid, folder / "py-spy-rendered.txt")
    for study, series, sop in targets * 3:
        session.get(f"{base}/studies/{study}/series/{series}/instances/{sop}/rendered", headers={**headers, "Accept": "image/jpeg"}).content  # noqa: B018
    found["rendered_py_spy"] = spy.stop()
    return found


def _all_ok(results: dict) -> bool:
    for level in results["levels"]:
        for by in level.get("qido", {}).values():
            if any(r["mismatches"] or set(r["statuses"]) != {"200"} for r in by.values()):
                return False
    if any(row.get("ok_studies") != len(row["studies"]) for row in results.get("wado", [])):
        return False
    return all(row.get("statuses", {"200": 1}).keys() == {"200"} for row in results.get("rendered", []))


if __name__ == "__main__":
    sys.exit(main())
