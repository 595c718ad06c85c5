"""The backup benchmark: a full backup of the corpus against copying the same bytes on the same disk, and an
incremental backup after 1% of the data changed.

    .venv/bin/python -m bench.backup [--instances 2000] [--repeat 3] [--changed 0.01] [--threads 8] [--keep]

A fresh medarchive (SQLite, archive and backup folders) under var/bench/backup-<timestamp>/, the corpus ingested
in-process through the ingest service, one accepted "all at a set time" contract. Then, `--repeat` times, in this
order, each after os.sync() and with an empty target:

| run            | what is timed                                                                                  |
| -------------- | ---------------------------------------------------------------------------------------------- |
| `cp+sync`      | `cp -r` of the archive folder to a new folder on the same disk, then `sync -f` (one flush)     |
| `copy+fsync`   | the same files read and written one by one with an fsync per file (what a durable copy costs)  |
| `copy+fsync x4`| the same, on as many threads as the backup copies with (`--threads`)                          |
| `backup full`  | `backup.engine.run.execute`: objects, each blob copied under a temporary name, fsynced, re-read |
|                | and hashed, renamed; folder fsyncs; entries; manifest; verification pass: the run until "done" |

then, `--repeat` times: another `--changed` share of the instances replaced by changed versions (ingest, archive
policy "keep newest"), `backup incremental` (only those are copied) and `backup unchanged` (nothing new).

Output: a markdown table on standard output, everything in var/bench/results-backup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from .corpus import ROOT, ensure_corpus

INSTITUTION = "bench-backup"


def configure(folder: Path, threads: int) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "medarchive.settings",
            "MEDARCHIVE_VAR_DIR": str(folder),
            "DATABASE_URL": f"sqlite:///{folder / 'medarchive.sqlite3'}",
            "ARCHIVE_ROOT": str(folder / "archive"),
            "BACKUP_ROOT": str(folder / "backup"),
            "SECRET_KEY": "medarchive-bench-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("MEDARCHIVE_TESTING", None)
    os.environ.pop("ARCHIVE_S3_BUCKET", None)
    os.environ.pop("BACKUP_S3_BUCKET", None)
    import django

    django.setup()
    from django.conf import settings

    settings.BACKUP_COPY_THREADS = threads


def prepare(corpus, log):
    from django.core.management import call_command
    from django.utils import timezone

    from backup.models import Contract
    from images.ingest.bulk import operator_for
    from images.ingest.service import IngestCache, ingest_instance
    from subscribers.models import Institution

    call_command("migrate", verbosity=0, interactive=False, stdout=io.StringIO())
    institution = Institution.objects.create(name="Backup Benchmark Hospital", slug=INSTITUTION)
    principal = operator_for(institution)
    cache = IngestCache()
    started = time.perf_counter()
    for n, instance in enumerate(corpus.instances, 1):
        ingest_instance(principal=principal, path=instance.path, source="import", cache=cache)
        if n % 250 == 0:
            log(f"  ingested {n:,}/{len(corpus.instances):,}")
    log(f"  ingested {len(corpus.instances):,} instances in {time.perf_counter() - started:.0f} s")
    contract = Contract.objects.create(
        institution=institution,
        title="Benchmark: everything at a set time",
        status=Contract.Status.ACCEPTED,
        awaiting="",
        mode="all_at_time",
        period_start=timezone.localdate(),
        accounting_points=1,
        rate=1,
        accepted_at=timezone.now(),
    )
    return institution, contract


def archive_files(institution) -> list[tuple[Path, int]]:
    from django.core.files.storage import storages

    from images.models import Instance

    archive = storages["archive"]
    return [
        (Path(archive.path(name)), size)
        for name, size in Instance.objects.filter(institution=institution).values_list("storage_name", "size_bytes")
    ]


def empty_target(folder: Path) -> None:
    from backup.models import BackupBlob, BackupObject, BackupRun, BackupSet, BackupSetFile

    BackupSetFile.objects.all().delete()
    BackupSet.objects.all().delete()
    BackupBlob.objects.all().delete()
    BackupObject.objects.all().delete()
    BackupRun.objects.all().delete()
    shutil.rmtree(folder / "backup", ignore_errors=True)
    (folder / "backup").mkdir()


def run_cp_sync(folder: Path, target: Path) -> float:
    shutil.rmtree(target, ignore_errors=True)
    os.sync()
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(folder / "archive"), str(target)], check=True)
    subprocess.run(["sync", "-f", str(target)], check=True)
    return time.perf_counter() - started


def run_copy_fsync(files: list[tuple[Path, int]], source_root: Path, target: Path, threads: int = 1) -> float:
    shutil.rmtree(target, ignore_errors=True)
    for directory in {(target / path.relative_to(source_root)).parent for path, _ in files}:
        directory.mkdir(parents=True, exist_ok=True)
    os.sync()

    def copy(path: Path) -> None:
        with open(path, "rb") as source, open(target / path.relative_to(source_root), "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())

    started = time.perf_counter()
    if threads == 1:
        for path, _ in files:
            copy(path)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(copy, [path for path, _ in files]):
                pass
    return time.perf_counter() - started


class Phases:
    """When each phase of a run started (the engine tells its listener)."""

    def __init__(self):
        self.marks: list[tuple[str, float]] = []

    def __call__(self, snapshot) -> None:
        if not self.marks or self.marks[-1][0] != snapshot.phase:
            self.marks.append((snapshot.phase, time.perf_counter()))

    def durations(self, end: float) -> dict[str, float]:
        result = {}
        for (phase, start), (_, stop) in zip(self.marks, [*self.marks[1:], ("end", end)], strict=True):
            result[phase.split(":")[0].split(" ")[0].lower()] = round(stop - start, 3)
        return result


def run_backup(contract, *, profile: bool = False) -> dict:
    from backup.engine import run as runs
    from backup.models import BackupRun
    from subscribers.access import OPERATOR

    os.sync()
    phases = Phases()
    started = time.perf_counter()
    run = runs.request_backup(contract=contract, principal=OPERATOR, trigger="command", enqueue=False)
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(runs.execute, run.pk, listener=phases)
        seconds = time.perf_counter() - started
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
    else:
        runs.execute(run.pk, listener=phases)
        seconds = time.perf_counter() - started
    run = BackupRun.objects.get(pk=run.pk)
    if run.status != BackupRun.Status.DONE:
        raise SystemExit(f"backup run failed: {run.message}")
    return {"seconds": seconds, "phases": phases.durations(started + seconds), "result": run.result}


def change_some(institution, fraction: float, log, *, offset: int = 0) -> int:
    """Replace `fraction` of the instances with changed versions (a new ImageComments), as a modality resending."""
    import pydicom
    from django.core.files.storage import storages

    from images.ingest.bulk import operator_for
    from images.ingest.service import ingest_instance
    from images.models import ArchivePolicy, Instance

    ArchivePolicy.objects.update_or_create(institution=institution, defaults={"on_conflict": ArchivePolicy.OnConflict.KEEP_NEWEST})
    instances = list(Instance.objects.filter(institution=institution).order_by("pk"))
    step = max(1, round(1 / fraction))
    chosen = instances[offset % step :: step]
    archive = storages["archive"]
    principal = operator_for(institution)
    for instance in chosen:
        with archive.open(instance.storage_name, "rb") as fh:
            dataset = pydicom.dcmread(fh)
        dataset.ImageComments = f"changed by bench.backup at {datetime.now(UTC).isoformat()}"
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        result = ingest_instance(principal=principal, data=buffer.getvalue(), source="import")
        assert result.status == "replaced", result.status
    log(f"  replaced {len(chosen)} of {len(instances)} instances with changed versions")
    return len(chosen)


def machine(folder: Path) -> dict:
    from .ingest import _filesystem, _git_revision

    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(int(memory) / 1e6, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "filesystem": _filesystem(folder),
        "load_average": os.getloadavg(),
        "git": _git_revision(),
    }


def markdown(rows: list[dict], incremental: dict, unchanged: dict, full_median: float, reference: dict, parallel: str) -> str:
    lines = [
        f"| run | seconds (median) | MB/s | ratio to cp+sync | ratio to copy+fsync | ratio to {parallel} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['seconds']:.2f} | {row['mb_per_s']:.0f} | {row['mb_per_s'] / reference['cp+sync']:.2f} | "
            f"{row['mb_per_s'] / reference['copy+fsync']:.2f} | {row['mb_per_s'] / reference[parallel]:.2f} |"
        )
    lines.append("")
    lines.append("| incremental run (median) | seconds | files copied | share of the full run's time (median) |")
    lines.append("| --- | ---: | ---: | ---: |")
    for name, run in (("after 1% changed", incremental), ("nothing changed", unchanged)):
        lines.append(f"| {name} | {run['seconds']:.3f} | {run['result']['written_files']} | {100 * run['seconds'] / full_median:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000, help="corpus size (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="full runs of each kind, alternating (default %(default)s)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of instances changed before the incremental run")
    parser.add_argument("--threads", type=int, default=8, help="BACKUP_COPY_THREADS (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep var/bench/backup-<timestamp>/ afterwards")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the full and the unchanged run")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    corpus = ensure_corpus(args.instances, log=log)
    folder = ROOT / f"backup-{stamp}"
    folder.mkdir(parents=True)
    try:
        configure(folder, args.threads)
        log(f"preparing a medarchive in {folder} ...")
        institution, contract = prepare(corpus, log)
        files = archive_files(institution)
        total = sum(size for _, size in files)
        parallel = f"copy+fsync x{args.threads}"
        times: dict[str, list[float]] = {"cp+sync": [], "copy+fsync": [], parallel: [], "backup full": []}
        details = []
        for repetition in range(args.repeat):
            times["cp+sync"].append(run_cp_sync(folder, folder / "copy-cp"))
            shutil.rmtree(folder / "copy-cp", ignore_errors=True)
            times["copy+fsync"].append(run_copy_fsync(files, folder / "archive", folder / "copy-fsync"))
            shutil.rmtree(folder / "copy-fsync", ignore_errors=True)
            times[parallel].append(run_copy_fsync(files, folder / "archive", folder / "copy-fsync", threads=args.threads))
            shutil.rmtree(folder / "copy-fsync", ignore_errors=True)
            if repetition:
                empty_target(folder)
            full = run_backup(contract, profile=args.profile and repetition == 0)
            times["backup full"].append(full["seconds"])
            details.append(full)
            log(
                f"  round {repetition + 1}: cp+sync {times['cp+sync'][-1]:.2f} s, copy+fsync {times['copy+fsync'][-1]:.2f} s, "
                f"{parallel} {times[parallel][-1]:.2f} s, "
                f"backup {full['seconds']:.2f} s {full['phases']}"
            )
        incrementals, unchangeds = [], []
        for repetition in range(args.repeat):
            change_some(institution, args.changed, log, offset=repetition)
            incrementals.append(run_backup(contract))
            unchangeds.append(run_backup(contract, profile=args.profile and repetition == 0))
            log(
                f"  incremental {incrementals[-1]['seconds']:.3f} s {incrementals[-1]['phases']}; "
                f"unchanged {unchangeds[-1]['seconds']:.3f} s"
            )
        incremental = sorted(incrementals, key=lambda r: r["seconds"])[len(incrementals) // 2]
        unchanged = sorted(unchangeds, key=lambda r: r["seconds"])[len(unchangeds) // 2]
        medians = {name: statistics.median(values) for name, values in times.items()}
        rate = {name: total / seconds / 1e6 for name, seconds in medians.items()}
        rows = [{"run": name, "seconds": medians[name], "mb_per_s": rate[name]} for name in times]
        table = markdown(rows, incremental, unchanged, medians["backup full"], rate, parallel)
        print(f"{len(files):,} instances, {total / 1e6:,.0f} MB; median of {args.repeat} rounds; {args.threads} copy threads\n")
        print(table)
        results = {
            "started": stamp,
            "load_average_at_end": os.getloadavg(),
            "machine": machine(folder),
            "instances": len(files),
            "bytes": total,
            "threads": args.threads,
            "times": times,
            "medians": medians,
            "mb_per_s": rate,
            "full_runs": details,
            "incremental": incremental,
            "unchanged": unchanged,
            "incremental_runs": incrementals,
            "unchanged_runs": unchangeds,
            "incremental_share_of_full": incremental["seconds"] / medians["backup full"],
            "full_ratio_to_cp_sync": rate["backup full"] / rate["cp+sync"],
            "full_ratio_to_copy_fsync": rate["backup full"] / rate["copy+fsync"],
            "full_ratio_to_parallel_copy_fsync": rate["backup full"] / rate[parallel],
        }
        out = ROOT / f"results-backup-{stamp}.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        log(f"results: {out}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
