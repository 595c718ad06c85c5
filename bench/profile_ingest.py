"""Where medarchive's ingest time goes: the ingest service called in-process on the corpus, stage by stage.

    .venv/bin/python -m bench.profile_ingest [--instances 500] [--from data|path] [--cprofile]

A fresh SQLite archive under var/bench/profile-<timestamp>/ (migrated, one institution, the benchmark's AE
title), then ingest_instance() for each instance as the DICOM listener calls it (principal of the AE,
the object in a temporary file: --from path; or in memory: --from data). Stages are timed by wrapping the
service's own functions from outside (nothing in images/ is changed): hash, parse, metadata JSON,
imaging conditions, durable write (file fsync, directory fsync) and the index transaction (queries counted).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from .corpus import ROOT, ensure_corpus
from .medarchive import CALLING_AET, INSTITUTION, USERNAME

STAGES = [
    ("sha256", "SHA-256 of the bytes (one read pass)"),
    ("parse", "pydicom dcmread + validation (pixel data deferred)"),
    ("lookup", "existing-instance query (before writing)"),
    ("write", "durable write: copy to temporary name, rename (without fsyncs)"),
    ("fsync_file", "fsync of the file"),
    ("fsync_dir", "fsync of the directory"),
    ("metadata", "metadata_json: DICOM JSON of the header (to_json_dict)"),
    ("conditions", "imaging conditions extraction"),
    ("db_get_or_create", "index: patient, study, series _get_or_create (3 SELECTs in 3 savepoints)"),
    ("db_insert_update", "index: instance INSERT (savepoint), series and study counter UPDATEs, ORM work"),
    ("db_commit", "index: COMMIT (SQLite WAL, synchronous=NORMAL)"),
    ("other", "rest: access check, open, the lookup's ORM work, naming, bookkeeping"),
]


class Timer:
    """Wall and CPU time per label, for functions wrapped in place (module attributes)."""

    def __init__(self):
        self.wall: Counter = Counter()
        self.cpu: Counter = Counter()
        self.calls: Counter = Counter()

    def wrap(self, module, name: str, label: str) -> None:
        original = getattr(module, name)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[label] += time.perf_counter() - wall
                self.cpu[label] += time.thread_time() - cpu
                self.calls[label] += 1

        setattr(module, name, timed)


class QueryCounter:
    """Every SQL statement Django sends (savepoints included), with its time; commits are counted apart."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self.current = ""
        self.lookup_seconds = 0.0
        self.by_kind: Counter = Counter()
        self.seconds_by_kind: Counter = Counter()

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            self.count += 1
            self.seconds += elapsed
            kind = sql.split()[0].upper()
            self.by_kind[kind] += 1
            self.seconds_by_kind[kind] += elapsed
            if self.current == "lookup":
                self.lookup_seconds += elapsed
                self.current = "index"


def configure(folder: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "medarchive.settings",
            "MEDARCHIVE_VAR_DIR": str(folder),
            "DATABASE_URL": f"sqlite:///{folder / 'medarchive.sqlite3'}",
            "ARCHIVE_ROOT": str(folder / "archive"),
            "SECRET_KEY": "medarchive-bench-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("MEDARCHIVE_TESTING", None)
    import django

    django.setup()


def prepare_archive():
    from django.core.management import call_command

    from subscribers.access import principal_for_ae

    quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
    call_command("migrate", verbosity=0, interactive=False, **quiet)
    call_command("create_institution", name="Benchmark Hospital", slug=INSTITUTION, **quiet)
    call_command("add_user", institution=INSTITUTION, username=USERNAME, roles="register", **quiet)
    call_command("register_ae", institution=INSTITUTION, ae_title=CALLING_AET, host="127.0.0.1", send=True, **quiet)
    return principal_for_ae(CALLING_AET, "127.0.0.1")


def instrument(timer: Timer, queries: QueryCounter):
    import images.conditions
    import images.ingest.service as service
    import images.storage as storage
    from images.models import Instance

    timer.wrap(service, "_sha256", "sha256")
    timer.wrap(service, "parse", "parse")
    timer.wrap(service, "metadata_json", "metadata")
    timer.wrap(images.conditions, "extract", "conditions")
    timer.wrap(service, "durable_write", "durable_write")
    timer.wrap(storage, "_fsync_dir", "fsync_dir")
    timer.wrap(os, "fsync", "fsync_all")
    timer.wrap(service, "_index", "index")
    timer.wrap(service, "_get_or_create", "get_or_create")
    from django.db import connection

    connection.ensure_connection()
    timer.wrap(connection, "commit", "commit")

    # The existing-instance lookup is inline in _ingest; time the first query after parse through the manager.
    original_filter = Instance.objects.filter

    def filter_marking_lookup(*args, **kwargs):
        if "sop_instance_uid" in kwargs and "institution" in kwargs and queries.current == "after_parse":
            queries.current = "lookup"
        return original_filter(*args, **kwargs)

    Instance.objects.filter = filter_marking_lookup
    original_parse = service.parse

    def parse_then_mark(*args, **kwargs):
        result = original_parse(*args, **kwargs)
        queries.current = "after_parse"
        return result

    service.parse = parse_then_mark


def breakdown(timer: Timer, queries: QueryCounter, total_wall: float, total_cpu: float, n: int) -> list[dict]:
    w, c = timer.wall, timer.cpu
    fsync_file = w["fsync_all"] - w["fsync_dir"]
    wall = {
        "sha256": w["sha256"],
        "parse": w["parse"],
        "lookup": queries.lookup_seconds,
        "write": w["durable_write"] - w["fsync_all"],
        "fsync_file": fsync_file,
        "fsync_dir": w["fsync_dir"],
        "metadata": w["metadata"],
        "conditions": w["conditions"],
        "db_get_or_create": w["get_or_create"],
        "db_insert_update": w["index"] - w["metadata"] - w["conditions"] - w["get_or_create"] - w["commit"],
        "db_commit": w["commit"],
    }
    cpu = {
        "sha256": c["sha256"],
        "parse": c["parse"],
        "lookup": None,
        "write": c["durable_write"] - c["fsync_all"],
        "fsync_file": c["fsync_all"] - c["fsync_dir"],
        "fsync_dir": c["fsync_dir"],
        "metadata": c["metadata"],
        "conditions": c["conditions"],
        "db_get_or_create": c["get_or_create"],
        "db_insert_update": c["index"] - c["metadata"] - c["conditions"] - c["get_or_create"] - c["commit"],
        "db_commit": c["commit"],
    }
    wall["other"] = total_wall - sum(wall.values())
    cpu["other"] = total_cpu - sum(v for v in cpu.values() if v is not None)  # the lookup's CPU is in here
    rows = []
    for key, meaning in STAGES:
        rows.append(
            {
                "stage": key,
                "meaning": meaning,
                "wall_ms_per_instance": round(1000 * wall[key] / n, 3),
                "cpu_ms_per_instance": None if cpu[key] is None else round(1000 * cpu[key] / n, 3),
                "share_of_wall": round(wall[key] / total_wall, 3),
            }
        )
    rows.append(
        {
            "stage": "total",
            "meaning": "ingest_instance()",
            "wall_ms_per_instance": round(1000 * total_wall / n, 3),
            "cpu_ms_per_instance": round(1000 * total_cpu / n, 3),
            "share_of_wall": 1.0,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=500, help="instances to ingest, from the 2,000 corpus (default %(default)s)")
    parser.add_argument(
        "--from",
        dest="source",
        choices=("path", "data"),
        default="path",
        help="path: each object in a temporary file, as the listener and STOW-RS hand it over (default); data: bytes in memory",
    )
    parser.add_argument("--cprofile", action="store_true", help="also run cProfile and print the top functions")
    parser.add_argument("--keep", action="store_true", help="keep the archive folder afterwards")
    args = parser.parse_args(argv)

    corpus = ensure_corpus(max(2000, args.instances))
    instances = corpus.instances[: args.instances]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = ROOT / f"profile-{stamp}"
    folder.mkdir(parents=True)
    configure(folder)
    principal = prepare_archive()

    from django.db import connection

    from images.ingest import ingest_instance

    spool = Path(tempfile.mkdtemp(prefix="spool-", dir=folder))
    data = [i.path.read_bytes() for i in instances]
    paths = []
    if args.source == "path":
        for number, blob in enumerate(data):
            path = spool / f"{number:06d}.dcm"
            path.write_bytes(blob)
            paths.append(path)
    os.sync()

    timer, queries = Timer(), QueryCounter()
    instrument(timer, queries)
    profiler = cProfile.Profile() if args.cprofile else None
    statuses: Counter = Counter()
    total_wall = total_cpu = 0.0
    with connection.execute_wrapper(queries):
        for number, blob in enumerate(data):
            source = {"path": paths[number]} if args.source == "path" else {"data": blob}
            queries.current = ""
            wall, cpu = time.perf_counter(), time.thread_time()
            if profiler:
                profiler.enable()
            result = ingest_instance(principal=principal, source="c-store", address="127.0.0.1", **source)
            if profiler:
                profiler.disable()
            total_wall += time.perf_counter() - wall
            total_cpu += time.thread_time() - cpu
            statuses[result.status] += 1

    n = len(data)
    rows = breakdown(timer, queries, total_wall, total_cpu, n)
    print(f"ingest_instance() x {n} ({args.source}), {total_wall:.1f} s wall: {n / total_wall:.1f} instances/s; statuses {dict(statuses)}")
    print(
        f"SQL statements per instance: {queries.count / n:.1f} ({', '.join(f'{k} {v / n:.1f}' for k, v in queries.by_kind.most_common())})"
    )
    by_kind = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in queries.seconds_by_kind.most_common())
    print(f"SQL execute time per instance: {1000 * queries.seconds / n:.2f} ms ({by_kind}; commit not included)\n")
    print("| stage | wall ms/instance | CPU ms/instance | share of wall | what |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        cpu = "—" if row["cpu_ms_per_instance"] is None else f"{row['cpu_ms_per_instance']:.2f}"
        print(f"| {row['stage']} | {row['wall_ms_per_instance']:.2f} | {cpu} | {100 * row['share_of_wall']:.0f}% | {row['meaning']} |")
    result = {
        "benchmark": "profile-ingest",
        "started": stamp,
        "instances": n,
        "from": args.source,
        "instances_per_second": round(n / total_wall, 2),
        "sql_statements_per_instance": round(queries.count / n, 2),
        "sql_by_kind_per_instance": {k: round(v / n, 2) for k, v in queries.by_kind.items()},
        "sql_ms_by_kind_per_instance": {k: round(1000 * v / n, 3) for k, v in queries.seconds_by_kind.items()},
        "stages": rows,
        "load_average": os.getloadavg()[0],
    }
    if profiler:
        out = ROOT / f"profile-ingest-{stamp}.prof"
        profiler.dump_stats(out)
        print(f"\ncProfile (saved to {out}), top 25 by own time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    out = ROOT / f"results-profile-ingest-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
