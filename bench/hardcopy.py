"""Hard-copy benchmark: seconds per 14x17 sheet of 20 CT images (512 x 512) at 300 dpi through the print agent, from
the job's request to the finished PDF in the hot folder, against fetching the same 20 images alone.

    .venv/bin/python -m bench.hardcopy [--runs 5] [--dpi 300] [--fetch-threads 4]

A private medarchive (SQLite and archive under var/bench/hardcopy/) is filled in this process, then served as the
embedded default serves it (`manage.py serve --no-worker --no-dicom`: gunicorn, 2 workers x 2 threads, in processes of
its own); the agent is the real one (hardcopy.agent.PrintAgent), speaking HTTP only.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import time
from pathlib import Path

from . import processes
from .medarchive import Medarchive

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "bench" / "hardcopy"


def setup_django(archive: Medarchive) -> None:
    """This process on the archive's database and storage, as the server sees them."""
    archive.folder.mkdir(parents=True)
    (archive.folder / "tmp").mkdir()
    archive.archive.mkdir()
    env = archive.environment()
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    logging.getLogger("weasyprint").setLevel(logging.WARNING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dpi", type=int, default=300)
    parser.add_argument("--fetch-threads", type=int, default=None, help="images the agent fetches at once (default: the agent's)")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    archive = Medarchive(WORK)
    setup_django(archive)

    from hardcopy import services
    from hardcopy.agent import FETCH_THREADS, PrintAgent
    from images.ingest import ingest_instance
    from images.synthetic import series
    from subscribers.access import OPERATOR, Principal
    from subscribers.models import Institution, Role

    institution = Institution.objects.create(name="Bench Hospital", slug="bench")
    sender = Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER, Role.PRINT}), is_provider_staff=True)
    images = [ingest_instance(principal=sender, data=d, source="bench").instance for d in series("CT", 20, rows=512, cols=512)]
    hot = WORK / "hot"
    printer, token = services.register_printer(
        actor=OPERATOR, institution=institution, name="bench", output="hot_folder", hot_folder=str(hot)
    )
    fmt = services.format_dict(film_size="14INX17IN", rows=5, columns=4, window_center=40, window_width=400, dpi=args.dpi)
    uids = [i.sop_instance_uid for i in images]

    archive.web()
    threads = args.fetch_threads or FETCH_THREADS
    fetch_times, sheet_times, cpu_times = [], [], []
    try:
        with PrintAgent(server=archive.url, token=token, hot_folder=str(hot), fetch_threads=threads) as agent:
            for _ in range(args.runs + 1):  # the first run warms up (imports, fonts, server workers) and is not counted
                job = services.create_print_job(actor=sender, fmt=fmt, uids=uids, printer=printer)
                start = time.perf_counter()
                agent.fetch_job(job.pk)
                fetch_times.append(time.perf_counter() - start)
                start, agent_cpu, server_cpu = time.perf_counter(), time.process_time(), processes.tree_cpu_seconds(archive.process.pid)
                result = agent.print_job(job.pk)
                sheet_times.append(time.perf_counter() - start)
                # CPU seconds hardly depend on what else the machine runs (the wall clock does, on a shared machine).
                cpu_times.append((time.process_time() - agent_cpu, processes.tree_cpu_seconds(archive.process.pid) - server_cpu))
                assert result.state == "printed", result
    finally:
        archive.stop()
    pdf = Path(result.path)
    fetch, sheet = statistics.median(fetch_times[1:]), statistics.median(sheet_times[1:])
    print(f"20 CT images 512x512 on a 14x17 5x4 sheet at {args.dpi} dpi, {args.runs} runs (median), {threads} fetches at once:")
    print(f"  fetch the 20 images alone (job + 20 PNGs at print size over HTTP): {fetch:.2f} s")
    print(f"  whole sheet through the print agent (fetch, compose, PDF in the hot folder, progress reports): {sheet:.2f} s")
    print(f"  composing alone: {sheet - fetch:.2f} s; PDF {pdf.stat().st_size / 1e6:.1f} MB")
    agent_cpu, server_cpu = (statistics.median(c[i] for c in cpu_times[1:]) for i in (0, 1))
    print(f"  CPU seconds a whole sheet takes: print agent {agent_cpu:.2f}, server {server_cpu:.2f} (in clock ticks of 10 ms)")
    print(
        f"  each run (fetch / whole sheet): {' '.join(f'{f:.2f}/{s:.2f}' for f, s in zip(fetch_times[1:], sheet_times[1:], strict=True))}"
    )


if __name__ == "__main__":
    main()
