"""Hard-copy benchmark: seconds per 14x17 sheet of 20 CT images (512 x 512) at 300 dpi through the print agent, from
the job's request to the finished PDF in the hot folder, against fetching the same 20 images alone.

    .venv/bin/python -m bench.hardcopy [--runs 5] [--dpi 300]

A private medarchive (SQLite under var/bench/hardcopy/, gunicorn-less: Django's WSGI app in a thread) serves the
device API over HTTP; the agent is the real one (hardcopy.agent.PrintAgent), speaking HTTP only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "bench" / "hardcopy"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def setup_django() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ.update(
        MEDARCHIVE_TESTING="1",
        MEDARCHIVE_VAR_DIR=str(WORK),
        DATABASE_URL=f"sqlite:///{WORK / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="medarchive.settings",
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dpi", type=int, default=300)
    args = parser.parse_args()
    setup_django()

    import logging

    logging.getLogger("weasyprint").setLevel(logging.WARNING)
    from django.core.wsgi import get_wsgi_application

    from hardcopy import services
    from hardcopy.agent import PrintAgent
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

    server = make_server("127.0.0.1", 0, get_wsgi_application(), server_class=_ThreadingServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    agent = PrintAgent(server=url, token=token, hot_folder=str(hot))
    fmt = services.format_dict(film_size="14INX17IN", rows=5, columns=4, window_center=40, window_width=400, dpi=args.dpi)
    uids = [i.sop_instance_uid for i in images]

    fetch_times, sheet_times = [], []
    for _ in range(args.runs + 1):  # the first run warms up (imports, fonts) and is not counted
        job = services.create_print_job(actor=sender, fmt=fmt, uids=uids, printer=printer)
        start = time.perf_counter()
        agent.fetch_job(job.pk)
        fetch_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = agent.print_job(job.pk)
        sheet_times.append(time.perf_counter() - start)
        assert result.state == "printed", result
    server.shutdown()
    pdf = Path(result.path)
    fetch, sheet = statistics.median(fetch_times[1:]), statistics.median(sheet_times[1:])
    print(f"20 CT images 512x512 on a 14x17 5x4 sheet at {args.dpi} dpi, {args.runs} runs (median):")
    print(f"  fetch the 20 images alone (job + 20 rendered PNGs over HTTP): {fetch:.2f} s")
    print(f"  whole sheet through the print agent (fetch, compose, PDF in the hot folder, progress reports): {sheet:.2f} s")
    print(f"  composing alone: {sheet - fetch:.2f} s; PDF {pdf.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
