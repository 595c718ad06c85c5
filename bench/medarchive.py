"""A private medarchive for the benchmark: its own database, archive folder and ports, set up with the operator commands.

Everything it writes lives under one folder (var/bench/run-<timestamp>/medarchive-<protocol>/); with
--database-url (PostgreSQL) the given database is migrated and flushed instead of a new SQLite file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from . import processes

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "manage.py"
AET = "MEDARCHIVE"
CALLING_AET = "BENCHSCU"
INSTITUTION = "bench-hospital"
USERNAME = "bench-pacs"


def command_exists(name: str) -> bool:
    """Whether manage.py <name> exists, judged by its file (no Django start-up needed)."""
    return any((REPO / app / "management" / "commands" / f"{name}.py").exists() for app in ("images", "medarchive", "subscribers"))


def stow_exists() -> bool:
    return (REPO / "images" / "dicomweb" / "stow.py").exists()


class Medarchive:
    """One fresh medarchive: `prepare()` migrates and registers the sender, then `listener()` or `web()` runs it."""

    def __init__(self, folder: Path, *, database_url: str | None = None):
        self.folder = Path(folder).resolve()
        self.database_url = database_url or f"sqlite:///{self.folder / 'medarchive.sqlite3'}"
        self.archive = self.folder / "archive"
        self.dicom_port = processes.free_port()
        self.http_port = processes.free_port()
        self.token = ""
        self.process: subprocess.Popen | None = None

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def environment(self) -> dict:
        env = processes.environment_without("DJANGO_SETTINGS_MODULE", "MEDARCHIVE_TESTING", "MEDARCHIVE_DEBUG", "REDIS_URL")
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "medarchive.settings",
                "MEDARCHIVE_PROFILE": "embedded",
                "MEDARCHIVE_VAR_DIR": str(self.folder),
                "DATABASE_URL": self.database_url,
                "ARCHIVE_ROOT": str(self.archive),
                "SECRET_KEY": "medarchive-bench-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DICOM_AET": AET,
                "DICOM_PORT": str(self.dicom_port),
                "LOG_LEVEL": "WARNING",
                # Temporary files (received C-STORE data sets, uploaded bodies) on the same disk, and cleaned up with the run.
                "TMPDIR": str(self.folder / "tmp"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def manage(self, *args: str, timeout: float = 300) -> str:
        return processes.run([sys.executable, str(MANAGE), *args], env=self.environment(), cwd=REPO, timeout=timeout)

    def run_module(self, module: str, *args, extra_env: dict | None = None, timeout: float = 900) -> str:
        """`python -m module args` with this archive's settings and database (a benchmark helper that sets up Django)."""
        env = {**self.environment(), **(extra_env or {})}
        return processes.run([sys.executable, "-m", module, *map(str, args)], env=env, cwd=REPO, timeout=timeout)

    def prepare(self) -> None:
        """An empty archive with one institution, a member allowed to send, a token and the benchmark's AE title."""
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "tmp").mkdir(parents=True)
        self.archive.mkdir()
        self.manage("migrate", "--no-input")
        if not self.uses_sqlite:
            self.manage("flush", "--no-input")  # a clean store in the given database
        self.manage("create_institution", "--name", "Benchmark Hospital", "--slug", INSTITUTION)
        self.manage("add_user", "--institution", INSTITUTION, "--username", USERNAME, "--roles", "register")
        self.manage("register_ae", "--institution", INSTITUTION, "--ae-title", CALLING_AET, "--host", "127.0.0.1", "--send")
        self.token = self.manage("issue_token", "--institution", INSTITUTION, "--username", USERNAME, "--name", "bench STOW-RS").strip()

    def add_member(self, username: str, roles: str) -> str:
        """Another member of the benchmark institution (e.g. a reader with the receive role); returns a new token of theirs."""
        self.manage("add_user", "--institution", INSTITUTION, "--username", username, "--roles", roles)
        return self.manage("issue_token", "--institution", INSTITUTION, "--username", username, "--name", f"bench {username}").strip()

    def clone(self, template: Medarchive) -> None:
        """An empty archive like prepare() gives, by copying the SQLite file of a prepared template (saves ~30 s of start-ups)."""
        if not (self.uses_sqlite and template.uses_sqlite):
            raise ValueError("only a SQLite archive can be cloned")
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "tmp").mkdir(parents=True)
        self.archive.mkdir()
        for path in template.folder.glob("medarchive.sqlite3*"):  # with -wal and -shm, should a checkpoint be pending
            shutil.copyfile(path, self.folder / path.name)
        self.token = template.token

    def listener(self) -> subprocess.Popen:
        argv = [sys.executable, str(MANAGE), "dicom_listener", "--bind", "127.0.0.1", "--port", str(self.dicom_port), "--aet", AET]
        self.process = processes.start(argv, log=self.folder / "dicom_listener.log", env=self.environment(), cwd=REPO)
        processes.wait_for_port(self.dicom_port, process=self.process, timeout=60)
        return self.process

    def web(self, gunicorn_config: Path | None = None, extra_env: dict | None = None) -> subprocess.Popen:
        """The web server as the embedded default runs it (serve: gunicorn 2 workers x 2 threads), without worker and listener.

        With gunicorn_config, gunicorn is started directly with the same workers and threads plus that configuration
        file (server-side experiments: hooks, settings), since serve takes no gunicorn options. extra_env overrides
        the environment (e.g. DJANGO_SETTINGS_MODULE of an experiment's settings).
        """
        if command_exists("serve") and gunicorn_config is None:
            argv = [sys.executable, str(MANAGE), "serve", "--no-worker", "--no-dicom", "--host", "127.0.0.1", "--port", str(self.http_port)]
        else:
            argv = [sys.executable, "-m", "gunicorn", "medarchive.wsgi", "--bind", f"127.0.0.1:{self.http_port}"]
            argv += ["--workers", "2", "--threads", "2", "--access-logfile", "-", "--no-control-socket"]
            if gunicorn_config is not None:
                argv += ["--config", str(gunicorn_config)]
        env = {**self.environment(), **(extra_env or {})}
        self.process = processes.start(argv, log=self.folder / "web.log", env=env, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web server exited ({self.process.returncode}):\n{processes.tail(self.folder / 'web.log')}")
            try:
                requests.get(f"{self.url}/dicomweb/studies", timeout=2)
                return self.process
            except requests.RequestException:
                time.sleep(0.2)
        raise TimeoutError(f"the web server did not answer within 60 s:\n{processes.tail(self.folder / 'web.log')}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def stow_url(self) -> str:
        return f"{self.url}/dicomweb/studies"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicomweb"

    def stop(self) -> None:
        if self.process is not None:
            # Both the listener and serve stop cleanly on SIGINT, as on Ctrl-C.
            processes.stop(self.process, sig=signal.SIGINT, timeout=30)
            self.process = None

    def count_instances(self) -> int:
        code = "from images.models import Instance; print(Instance.objects.count())"
        return int(self.manage("shell", "-c", code).strip().splitlines()[-1])

    def count_files(self) -> int:
        return sum(1 for _, _, files in os.walk(self.archive) for name in files if name.endswith(".dcm"))
