"""Where a de-identification job's time goes: jobs run in-process (`runner.run_job`), stage by stage, beside the plain
and durable loops of bench.software on the same files.

    .venv/bin/python -m bench.profile_software [--studies 2] [--runs 3] [--tmpfs] [--cprofile]

A fresh SQLite archive (under var/bench/profile-software/, or /dev/shm with --tmpfs, which takes fsync out of the
figures and leaves the CPU cost). Stages are timed by wrapping the runner's and the ingest service's own functions from
outside (nothing is changed): reading the sources, the edits, serializing, and the ingest (SHA-256, parse, durable
write, the index with its metadata JSON). --cprofile writes a cProfile of the first run's jobs next to the database.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from . import software as bench_software

STAGES = [
    ("_load", "runner", "reading the sources from the archive (dcmread)"),
    ("process", "processor", "the edits (the processor's process())"),
    ("part10", "runner", "serializing each product"),
    ("ingest_instance", "runner", "ingest, all of it:"),
    ("_hashes", "ingest", "  SHA-256 (file and data set)"),
    ("parse", "ingest", "  parse and validation"),
    ("durable_write", "ingest", "  durable write (fsync of file and folder)"),
    ("_index", "ingest", "  index transaction, of which:"),
    ("metadata_json", "ingest", "    DICOM JSON of the header"),
    ("_index_instance", "ingest", "    instance row and the series and study counters"),
    ("_index_rows", "ingest", "    patient, study and series looked up (IngestCache misses)"),
    ("commit", "batch", "a batch's transaction (ingest of its products, item and progress rows)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=2, help="studies of the corpus (250 instances each)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tmpfs", action="store_true", help="database and archive in /dev/shm (no disk, no fsync cost)")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    bench_software.WORK = Path("/dev/shm/medarchive-profile-software") if args.tmpfs else bench_software.ROOT / "var/bench/profile-software"
    bench_software.setup_django()
    try:
        run(args)
    finally:
        if args.tmpfs:
            shutil.rmtree(bench_software.WORK, ignore_errors=True)


def run(args) -> None:
    from bench.corpus import ensure_corpus
    from images.ingest import IngestCache, ingest_instance
    from images.ingest import service as ingest
    from software.processors import registry
    from software.services import catalogue, jobs, licences, runner
    from subscribers.access import OPERATOR, Principal
    from subscribers.models import Institution, Role

    corpus = ensure_corpus(2000, log=lambda text: print(text, file=sys.stderr))
    chosen = sorted({i.study_instance_uid for i in corpus.instances})[: args.studies]
    paths = [i.path for i in corpus.instances if i.study_instance_uid in chosen]
    institution = Institution.objects.create(name="Profile Hospital", slug="profile")
    principal = Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER, Role.SOFTWARE}))
    software = catalogue.ensure_processor_software(actor=OPERATOR, processor_id="deidentify")
    licences.grant_licence(actor=OPERATOR, institution=institution, software=software)
    cache = IngestCache()
    for path in paths:
        ingest_instance(principal=principal, path=path, source="bench", cache=cache)

    seconds, calls = Counter(), Counter()
    owners = {"runner": runner, "ingest": ingest, "batch": runner.ProductBatch, "processor": type(registry.get("deidentify"))}
    for name, owner, _ in STAGES:
        _time(owners[owner], name, seconds, calls)

    figures = {"plain": [], "durable": [], "job": [], "job_cpu": []}
    for number in range(1, args.runs + 1):
        figures["plain"].append(bench_software.plain_deidentify(paths, number))
        figures["durable"].append(bench_software.durable_deidentify(paths, number))
        seconds.clear()
        calls.clear()
        profile = cProfile.Profile() if args.cprofile and number == 1 else None
        started, cpu = time.perf_counter(), time.process_time()
        for uid in chosen:
            job = jobs.submit_job(principal=principal, processor_id="deidentify", parameters={}, uids=[uid], queue=False)
            if profile:
                profile.enable()
            job = runner.run_job(job.pk)
            if profile:
                profile.disable()
            assert job.status == "succeeded", job.error
        figures["job"].append(time.perf_counter() - started)
        figures["job_cpu"].append(time.process_time() - cpu)
        if profile:
            profile.dump_stats(bench_software.WORK / "jobs.prof")
        count = len(paths)
        print(f"run {number}: ms per instance: plain {1000 * figures['plain'][-1] / count:.2f}, ", end="")
        print(f"durable {1000 * figures['durable'][-1] / count:.2f}, job {1000 * figures['job'][-1] / count:.2f}")
        for name, _, label in STAGES:
            if calls[name]:
                print(f"  {label:<72} {1000 * seconds[name] / count:6.2f}")
    count = len(paths)
    medians = {key: 1000 * statistics.median(values) / count for key, values in figures.items()}
    print(f"median of {args.runs}, ms per instance ({count} instances{', tmpfs' if args.tmpfs else ''}): ", end="")
    print(", ".join(f"{key} {value:.2f}" for key, value in medians.items()))
    print(
        f"job over plain {100 * (medians['job'] / medians['plain'] - 1):.0f} %, over durable {100 * (medians['job'] / medians['durable'] - 1):.0f} %"
    )


def _time(owner, name: str, seconds: Counter, calls: Counter) -> None:
    function = getattr(owner, name)

    @functools.wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
            calls[name] += 1

    setattr(owner, name, timed)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
