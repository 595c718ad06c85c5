"""`manage.py serve`, the embedded all-in-one: web and worker with beat come up together and stop together."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from medarchive.models import WorkerHeartbeat
from tests.worker import die_with_parent, stop_process_group, tail, wait_until, worker_environment

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STOP_WITHIN = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def heartbeat_overdue(transactional_db):
    """The periodic heartbeat, last sent an hour ago: beat sends it as soon as it starts instead of a minute later."""
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(
        name="worker-heartbeat",
        defaults={
            "task": "medarchive.tasks.record_heartbeat",
            "interval": every_minute,
            "last_run_at": timezone.now() - timedelta(hours=1),
        },
    )


@pytest.mark.skipif(sys.platform != "linux", reason="counts child processes through /proc")
def test_serve_runs_web_and_worker_with_beat_and_ctrl_c_stops_them_all(heartbeat_overdue, celery_broker_dir, tmp_path):
    port = free_port()
    env = worker_environment(tmp_path / "broker" if celery_broker_dir else None)
    # A queue of its own, so that only serve's worker can record the heartbeat serve's beat sends.
    env["CELERY_QUEUE"] = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-serve"
    log_path = tmp_path / "serve.log"
    argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "serve", "--no-dicom", "--port", str(port)]
    with open(log_path, "wb") as log:
        serve = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    def output():
        return tail(log_path)

    try:
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200 or serve.poll() is not None,
            timeout=60,
            failure=lambda: f"/healthz did not answer 200 within 60 s; serve's output:\n{output()}",
        )
        assert serve.poll() is None, f"serve exited early with code {serve.returncode}:\n{output()}"
        wait_until(
            lambda: WorkerHeartbeat.objects.filter(worker=socket.gethostname()).first(),
            timeout=60,
            failure=lambda: f"no heartbeat from serve's beat and worker within 60 s; serve's output:\n{output()}",
        )
        assert f"http://127.0.0.1:{port}/" in log_path.read_text()
        children = descendants(serve.pid)
        assert len(children) >= 2, f"expected gunicorn and celery below serve, found {children}"

        started = time.monotonic()
        serve.send_signal(signal.SIGINT)
        code = serve.wait(timeout=STOP_WITHIN)

        assert time.monotonic() - started < STOP_WITHIN
        assert code == 0, output()
        assert not [pid for pid in children if alive(pid)], f"processes left behind by serve:\n{output()}"
    finally:
        stop_process_group(serve, timeout=STOP_WITHIN)  # when an assertion failed with serve still running
