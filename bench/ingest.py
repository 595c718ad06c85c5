"""Ingest throughput: medarchive vs Orthanc over C-STORE and STOW-RS, and the disk's own limit, on one corpus.

    .venv/bin/python -m bench.ingest [--instances 2000] [--batch 50] [--skip-orthanc] [--storescu] [--database-url URL]

Each system gets an empty store before its run; counts are verified after it. Results go to
var/bench/results-ingest-<timestamp>.json and a markdown table on standard output (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pynetdicom

from . import orthanc as orthanc_module
from . import processes
from .clients import Loaded, Measurement, load, log, send_cstore, send_storescu, send_stow
from .corpus import ROOT, ensure_corpus
from .medarchive import AET, Medarchive, command_exists, stow_exists

RUNS = (
    "copy",
    "medarchive-cstore",
    "medarchive-storescu",
    "medarchive-stow",
    "orthanc-cstore",
    "orthanc-storescu",
    "orthanc-stow",
)
PROTOCOLS = {"copy": "file copy + fsync", "cstore": "C-STORE (pynetdicom)", "storescu": "C-STORE (dcmtk storescu)", "stow": "STOW-RS"}


# --- The runs -------------------------------------------------------------------------------------


def run_copy(loaded: Loaded, folder: Path, m: Measurement) -> None:
    """The physical limit: the same bytes written file by file (same folders) with an fsync per file."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    client_before, started = time.process_time(), time.perf_counter()
    made = set()
    for instance, data in zip(loaded.corpus.instances, loaded.data, strict=True):
        target = folder / instance.path.relative_to(loaded.corpus.root)
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        with open(target, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    m.seconds = time.perf_counter() - started
    m.client_cpu_seconds = time.process_time() - client_before
    m.stored = sum(1 for _, _, files in os.walk(folder) for _ in files)
    m.details["method"] = "open, write, fsync, close per file (no directory fsync)"


def run_medarchive(loaded: Loaded, folder: Path, m: Measurement, *, client: str, database_url: str | None, template) -> None:
    server = Medarchive(folder, database_url=database_url)
    if server.uses_sqlite:
        server.clone(template())
    else:
        log(f"  preparing {server.database_url.split('@')[-1]}: migrate, flush, operator commands")
        server.prepare()
    try:
        if client == "stow":
            process = server.web()
            m.details["server"] = "manage.py serve --no-worker --no-dicom" if command_exists("serve") else "gunicorn -w 2"
            send_stow(loaded, url=server.stow_url, token=server.token, measurement=m, server_pid=process.pid)
        else:
            process = server.listener()
            m.details["server"] = "manage.py dicom_listener (one process, a thread per association)"
            if client == "cstore":
                send_cstore(loaded, port=server.dicom_port, called_aet=AET, measurement=m, server_pid=process.pid)
            else:
                send_storescu(
                    loaded.corpus,
                    port=server.dicom_port,
                    called_aet=AET,
                    measurement=m,
                    server_pid=process.pid,
                    log_path=folder / "storescu.log",
                )
    finally:
        server.stop()
        m.details["database"] = "sqlite" if server.uses_sqlite else server.database_url.split(":", 1)[0]
        m.stored = server.count_instances()  # also after a failed run: how far it got
        m.details["files_in_archive"] = server.count_files()


def run_orthanc(loaded: Loaded, folder: Path, m: Measurement, *, client: str, max_pdu: int) -> None:
    with orthanc_module.Orthanc(folder, max_pdu=max_pdu) as server:
        m.details["server"] = f"{orthanc_module.version()}, DCMTK with TCP_NODELAY=1"
        pid = server.process.pid
        try:
            _send_to_orthanc(loaded, folder, m, server, client, pid)
        finally:
            m.stored = server.count_instances()  # also after a failed run: how far it got


def _send_to_orthanc(loaded: Loaded, folder: Path, m: Measurement, server, client: str, pid: int) -> None:
    if client == "cstore":
        send_cstore(loaded, port=server.dicom_port, called_aet=orthanc_module.AET, measurement=m, server_pid=pid)
    elif client == "storescu":
        send_storescu(
            loaded.corpus,
            port=server.dicom_port,
            called_aet=orthanc_module.AET,
            measurement=m,
            server_pid=pid,
            log_path=folder / "storescu.log",
        )
    else:
        send_stow(loaded, url=server.stow_url, measurement=m, server_pid=pid)


def execute(run: str, loaded: Loaded, base: Path, args, template) -> Measurement:
    system, _, client = run.partition("-")
    client = client or "copy"
    m = Measurement(protocol=PROTOCOLS[client], system=system, instances=len(loaded.data), bytes=loaded.total_bytes)
    folder = base / run
    os.sync()  # dirty pages of the previous run are not this run's work
    m.details["load_average_before"] = round(os.getloadavg()[0], 2)
    log(f"{run}: {m.instances} instances (load average {m.details['load_average_before']}) ...")
    try:
        if run == "copy":
            run_copy(loaded, folder, m)
        elif system == "medarchive":
            run_medarchive(loaded, folder, m, client=client, database_url=args.database_url, template=template)
        else:
            run_orthanc(loaded, folder, m, client=client, max_pdu=args.orthanc_max_pdu)
    except Exception as exc:
        m.error = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    finally:
        m.details["load_average_after"] = round(os.getloadavg()[0], 2)
        if not args.keep:
            for name in ("archive", "storage", "tmp"):
                shutil.rmtree(folder / name, ignore_errors=True)
            if run == "copy":
                shutil.rmtree(folder, ignore_errors=True)
    state = "ok" if m.ok else f"NOT OK ({m.error or f'{m.failures} failures, {m.stored} stored; {m.first_failure}'})"
    log(f"{run}: {m.seconds:.1f} s, {m.instances_per_second:.1f} instances/s, {m.megabytes_per_second:.1f} MB/s — {state}")
    return m


class Template:
    """The prepared SQLite archive every medarchive run starts from (migrate and operator commands run once)."""

    def __init__(self, folder: Path):
        self.server = Medarchive(folder)
        self.ready = False

    def __call__(self) -> Medarchive:
        if not self.ready:
            log(
                f"  preparing an empty medarchive (migrate, create_institution, add_user, register_ae, issue_token) in {self.server.folder}"
            )
            self.server.prepare()
            self.ready = True
        return self.server


# --- Report ---------------------------------------------------------------------------------------


def ratios(measurements: list[Measurement]) -> list[dict]:
    by_key = {(m.protocol, m.system): m for m in measurements if not m.error}
    copy = by_key.get((PROTOCOLS["copy"], "copy"))
    rows = []
    for m in measurements:
        orthanc = by_key.get((m.protocol, "orthanc"))
        rows.append(
            {
                "protocol": m.protocol,
                "system": m.system,
                "ratio_to_orthanc": round(m.instances_per_second / orthanc.instances_per_second, 2)
                if orthanc and m.seconds and m.system != "copy"
                else None,
                "ratio_to_copy": round(m.instances_per_second / copy.instances_per_second, 3) if copy and m.seconds else None,
            }
        )
    return rows


def markdown(measurements: list[Measurement], ratio_rows: list[dict]) -> str:
    def number(value, digits=2):
        return "—" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| protocol | system | instances | seconds | instances/s | MB/s | ratio to Orthanc | ratio to copy | server CPU ms/instance | verified |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for m, r in zip(measurements, ratio_rows, strict=True):
        cpu = 1000 * m.server_cpu_seconds / m.instances if m.server_cpu_seconds else None
        verified = "ok" if m.ok else (m.error[:60] or f"{m.stored} stored, {m.failures} failed")
        lines.append(
            f"| {m.protocol} | {m.system} | {m.instances} | {number(m.seconds, 1)} | {number(m.instances_per_second, 1)} "
            f"| {number(m.megabytes_per_second, 1)} | {number(r['ratio_to_orthanc'])} | {number(r['ratio_to_copy'], 3)} | {number(cpu, 1)} | {verified} |"
        )
    return "\n".join(lines)


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT.parent.parent
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT.parent.parent).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def _filesystem(path: Path) -> str:
    best = ("?", "", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        if str(path).startswith(mount) and len(mount) > len(best[1]):
            best = (device, mount, kind)
    return f"{best[0]} on {best[1]} ({best[2]})"


def machine() -> dict:
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(int(memory) / 1e6, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
        "orthanc": orthanc_module.version(),
        "filesystem": _filesystem(ROOT),
        "git": _git_revision(),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000, help="corpus size (default %(default)s)")
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request (default %(default)s)")
    parser.add_argument("--skip-orthanc", action="store_true", help="leave out the Orthanc runs")
    parser.add_argument(
        "--storescu",
        action="store_true",
        help="also send over C-STORE with DCMTK's storescu (C++), to tell the servers' limits from the pynetdicom sender's",
    )
    parser.add_argument("--only", metavar="RUN,...", help=f"run only these, comma-separated, from: {', '.join(RUNS)}")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="medarchive's database (e.g. postgres://user:pw@127.0.0.1/medarchive_bench, migrated and FLUSHED before each run); "
        "default: a new SQLite file per run",
    )
    parser.add_argument("--orthanc-max-pdu", type=int, default=16384, help="Orthanc's MaximumPduLength (default %(default)s, as shipped)")
    parser.add_argument("--keep", action="store_true", help="keep the stored files of each run (default: deleted after verification)")
    return parser.parse_args(argv)


def selected_runs(args) -> list[str]:
    runs = list(RUNS)
    if args.only:
        wanted = [r.strip() for r in args.only.split(",") if r.strip()]
        unknown = set(wanted) - set(RUNS)
        if unknown:
            raise SystemExit(f"unknown run(s): {', '.join(sorted(unknown))}; choose from {', '.join(RUNS)}")
        runs = [r for r in RUNS if r in wanted]
    if args.skip_orthanc:
        runs = [r for r in runs if not r.startswith("orthanc")]
    if not args.storescu and not args.only:
        runs = [r for r in runs if not r.endswith("storescu")]
    missing = orthanc_module.available()
    if missing and any(r.startswith("orthanc") for r in runs):
        raise SystemExit(f"{missing}; or pass --skip-orthanc")
    if any(r in runs for r in ("medarchive-cstore", "medarchive-storescu")) and not command_exists("dicom_listener"):
        raise SystemExit("manage.py dicom_listener does not exist yet; leave out medarchive-cstore and medarchive-storescu (--only)")
    if any(r.endswith("storescu") for r in runs) and not shutil.which("storescu"):
        raise SystemExit("storescu is not installed (apt-get install dcmtk); or leave out the *-storescu runs (--only)")
    if "medarchive-stow" in runs and not stow_exists():
        raise SystemExit("images/dicomweb/stow.py does not exist yet; leave out medarchive-stow (--only)")
    return runs


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # so that finally blocks and atexit stop the servers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # pynetdicom reports aborted associations and reactor errors through logging only.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    runs = selected_runs(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = ROOT / f"run-{stamp}"
    corpus = ensure_corpus(args.instances, log=log)
    loaded = load(corpus, args.batch)
    template = Template(base / "medarchive-template")
    measurements = []
    try:
        for run in runs:
            measurements.append(execute(run, loaded, base, args, template))
    finally:
        processes.stop_all()
    ratio_rows = ratios(measurements)
    results = {
        "benchmark": "ingest",
        "started": stamp,
        "command": re.sub(
            r"://([^:/@]*):[^@]*@",
            r"://\1:***@",
            " ".join([".venv/bin/python", "-m", "bench.ingest", *(argv if argv is not None else sys.argv[1:])]),
        ),
        "machine": machine(),
        "corpus": {
            "folder": str(corpus.root),
            "instances": len(corpus.instances),
            "studies": corpus.studies,
            "bytes": loaded.total_bytes,
            "transfer_syntax": "Explicit VR Little Endian",
            "image": "512x512x16 bit CT and MR",
        },
        "batch": args.batch,
        "logs": str(base),
        "results": [{**m.as_json(), **r} for m, r in zip(measurements, ratio_rows, strict=True)],
    }
    out = ROOT / f"results-ingest-{stamp}.json"
    out.write_text(json.dumps(results, indent=2))
    print(markdown(measurements, ratio_rows))
    print(f"\nresults: {out}")
    return 0 if all(m.ok for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
