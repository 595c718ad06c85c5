"""A real Celery worker process for the tests that prove the background wiring (a pytest plugin, see conftest.py).

The worker runs as a subprocess on the test database and on the same broker as the test process: Redis when
REDIS_URL is set, otherwise a filesystem broker in a folder of this test session's own.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from medarchive.celery import app
from medarchive.models import WorkerHeartbeat
from medarchive.tasks import record_heartbeat

READY_SENTINEL = "pytest-ready"
READY_TIMEOUT = 60
STOP_TIMEOUT = 10
PR_SET_PDEATHSIG = 1


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path
    queue: str
    # The worker's archive and backup folders (ARCHIVE_ROOT, BACKUP_ROOT): a test whose files the worker must read
    # points its own storages here (the per-test folders of conftest are not the worker's).
    storage_root: Path | None = None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


def wait_until(condition: Callable[[], object], *, timeout: float, failure: Callable[[], str], interval: float = 0.2):
    """Poll `condition` until it returns something truthy (returned); fail the test with `failure()` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(failure(), pytrace=False)
        time.sleep(interval)


def current_database_url() -> str:
    """DATABASE_URL for another process to open the database this test session is using right now."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            pytest.fail("a worker process needs the SQLite test database in a file (DATABASES TEST NAME)", pytrace=False)
        return f"sqlite:///{name}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
        host = quote(db.get("HOST") or "", safe="")  # a socket directory is percent-encoded
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{quote(db['USER'] or '', safe='')}{password}@{host}{port}/{quote(db['NAME'], safe='')}"
    pytest.fail(f"no DATABASE_URL for a worker on {db['ENGINE']}", pytrace=False)


def uses_filesystem_broker() -> bool:
    return settings.CELERY_BROKER_URL.startswith("filesystem://")


def filesystem_transport_options(broker_dir: Path) -> dict:
    """The transport options settings.py derives from CELERY_BROKER_DIR, plus the exchange table folder.

    kombu keeps that table in "control" relative to the working directory unless told otherwise; the
    worker subprocess runs inside broker_dir, so both sides find the same table.
    """
    return {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "control_folder": str(broker_dir / "control"),
        "store_processed": False,
    }


def worker_environment(broker_dir: Path | None) -> dict:
    """Environment for a child process (worker or serve) on this session's test database and broker."""
    env = os.environ.copy()
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")  # pytest-django has set it to what this session uses
    env.update(
        MEDARCHIVE_TESTING="1",
        DATABASE_URL=current_database_url(),
        CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        PYTHONPATH=os.pathsep.join(filter(None, [str(settings.BASE_DIR), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    # CELERY_QUEUE already carries the pytest-xdist suffix: without this, tests.settings would add it a second time
    # in the child, and tasks the worker itself sends (on_commit follow-ups) would go to a queue nobody consumes.
    env.pop("PYTEST_XDIST_WORKER", None)
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
        env["CELERY_BROKER_DIR"] = str(broker_dir)
    return env


def die_with_parent():
    """In the child, before exec: have Linux stop it if pytest itself is killed without running teardown."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


def stop_process_group(process: subprocess.Popen, *, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
    """Ask a child started with start_new_session=True to stop; kill its whole group if it takes too long."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return process.wait()


def _forget_broker_connections():
    # Connections (and their pools) capture the transport options when first made; drop any made already.
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture(scope="session", autouse=True)
def celery_broker_dir(tmp_path_factory) -> Iterator[Path | None]:
    """Give this test session a filesystem broker folder of its own (None with Redis).

    Without it, tasks published by tests would land in var/broker, where bin/run's worker would pick them up.
    Settings were loaded before any fixture runs, so the Celery app's options are changed here, not via the
    environment.
    """
    if not uses_filesystem_broker():
        yield None
        return
    broker_dir = tmp_path_factory.mktemp("broker")
    options = filesystem_transport_options(broker_dir)
    for key in ("data_folder_in", "processed_folder", "control_folder"):
        os.makedirs(options[key], exist_ok=True)
    previous = app.conf.broker_transport_options
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "BROKER_DIR", broker_dir)
        patch.setattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", options)
        app.conf.broker_transport_options = options
        _forget_broker_connections()
        try:
            yield broker_dir
        finally:
            app.conf.broker_transport_options = previous
            _forget_broker_connections()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, celery_broker_dir, tmp_path_factory) -> Iterator[WorkerProcess]:
    """A `celery worker` subprocess consuming this session's queue against the test database, ready when yielded.

    Started once, on first use, and stopped at the end of the session (before the test database is dropped).
    Tests that use it need `django_db(transaction=True)`: the worker only sees committed rows.
    """
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    argv = [sys.executable, "-m", "celery", "-A", "medarchive", "worker", "--pool=solo", "--concurrency=1", "-Q", queue]
    argv += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"]
    log_path = tmp_path_factory.mktemp("celery-worker") / "worker.log"
    storage_root = tmp_path_factory.mktemp("celery-worker-storage")
    env = worker_environment(celery_broker_dir)
    env.update(ARCHIVE_ROOT=str(storage_root / "archive"), BACKUP_ROOT=str(storage_root / "backup"))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=celery_broker_dir or settings.BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    worker = WorkerProcess(process=process, log_path=log_path, queue=queue, storage_root=storage_root)
    try:
        with django_db_blocker.unblock():
            _wait_until_ready(worker)
        yield worker
    finally:
        stop_process_group(process)


def _wait_until_ready(worker: WorkerProcess) -> None:
    # `celery inspect ping` needs a broadcast the filesystem transport does poorly; a task round trip
    # through the database proves more anyway: broker, worker, task code and database all work.
    WorkerHeartbeat.objects.filter(worker=READY_SENTINEL).delete()
    record_heartbeat.delay(READY_SENTINEL)

    def ready():
        if worker.process.poll() is not None:
            pytest.fail(
                f"the Celery worker exited with code {worker.process.returncode} before it was ready; its output:\n{worker.log_tail()}",
                pytrace=False,
            )
        return WorkerHeartbeat.objects.filter(worker=READY_SENTINEL).exists()

    wait_until(
        ready,
        timeout=READY_TIMEOUT,
        failure=lambda: (
            f"the Celery worker (queue {worker.queue!r}, broker {settings.CELERY_BROKER_URL.split('://')[0]}) did not record "
            f"the {READY_SENTINEL!r} heartbeat within {READY_TIMEOUT} s; its output:\n{worker.log_tail()}"
        ),
    )
    WorkerHeartbeat.objects.filter(worker=READY_SENTINEL).delete()
