"""Run the embedded all-in-one: web server, Celery worker with beat, and the DICOM listener, as child processes."""

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management import get_commands
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

WEB_WORKERS = 2
WEB_THREADS = 2
WORKER_CONCURRENCY = 2
# Long enough for an idle worker and gunicorn to stop cleanly; a task still running after that is
# killed and, because tasks are acked late, delivered again when the worker next starts.
STOP_TIMEOUT = 15
POLL_INTERVAL = 0.25
PR_SET_PDEATHSIG = 1


@dataclass
class Service:
    name: str
    argv: list[str]
    address: str
    stop_signal: signal.Signals = signal.SIGTERM
    process: subprocess.Popen | None = field(default=None, repr=False)


def _die_with_parent():
    """In the child, before exec: ask Linux to SIGTERM us if serve itself is killed without a chance to stop us."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


class Command(BaseCommand):
    help = (
        "Run medarchive on one machine: the web server (gunicorn), a Celery worker with embedded beat, and the "
        "DICOM listener (when the dicom_listener command is installed), each as a child process. "
        "Does not migrate or collect static files (bin/run does both first). "
        "Ctrl-C or SIGTERM stops every child and waits for it; if any child dies, the others are stopped "
        "and serve exits non-zero naming the one that died."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address the web server binds to (default: %(default)s)")
        parser.add_argument("--port", type=int, default=8000, help="port the web server binds to (default: %(default)s)")
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="do not start the Celery worker and beat (run `celery -A medarchive worker -B` elsewhere)",
        )
        parser.add_argument("--no-dicom", action="store_true", help="do not start the DICOM listener")

    def handle(self, *args, **options):
        self.check_migrations()
        connections.close_all()  # serve itself needs no database connection while it watches
        services, skipped = self._plan(options)
        self._stop_requested = None
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        died = None
        try:
            self._start(services)
            for line in skipped:
                self.stdout.write(line)
            self.stdout.write("serve: running; Ctrl-C stops all services")
            self.stdout.flush()
            died = self._watch(services)
        finally:
            reason = f"{died.name} exited" if died else f"received {self._stop_requested or 'an error'}"
            self._stop([s for s in services if s.process], reason=reason)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if died:
            code = died.process.returncode
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise CommandError(f"{died.name} {how}; stopped the other services")

    def _plan(self, options) -> tuple[list[Service], list[str]]:
        python = sys.executable
        host, port = options["host"], options["port"]
        url_host = f"[{host}]" if ":" in host else host
        queue = settings.CELERY_TASK_DEFAULT_QUEUE

        web = [python, "-m", "gunicorn", "medarchive.wsgi", "--bind", f"{url_host}:{port}"]
        web += ["--workers", str(WEB_WORKERS), "--threads", str(WEB_THREADS)]
        web += ["--graceful-timeout", str(STOP_TIMEOUT - 5), "--access-logfile", "-"]
        web += ["--no-control-socket"]  # one per user by default: a second instance would take it over
        services = [Service("web", web, f"http://{url_host}:{port}/ (gunicorn, {WEB_WORKERS} workers x {WEB_THREADS} threads)")]
        skipped = []

        if options["no_worker"]:
            skipped.append("  worker  not started (--no-worker): tasks wait in the broker for a worker started elsewhere")
        else:
            worker = [python, "-m", "celery", "-A", "medarchive", "worker", "-B"]
            worker += ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
            worker += ["--concurrency", str(WORKER_CONCURRENCY), "-Q", queue, "-l", "INFO"]
            if self._filesystem_broker:
                # Gossip, mingle and event heartbeats are cluster chatter; with one worker on a
                # folder broker they would only churn files.
                worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            services.append(Service("worker", worker, f"celery worker + beat on queue {queue!r}, {self._broker_description()}"))

        if options["no_dicom"]:
            skipped.append("  dicom   not started (--no-dicom)")
        elif "dicom_listener" not in get_commands():
            skipped.append("  dicom   not started (no dicom_listener command installed yet)")
        else:
            dicom = [python, str(settings.BASE_DIR / "manage.py"), "dicom_listener"]
            address = f"DICOM listener AE {settings.DICOM_AET!r} on port {settings.DICOM_PORT}"
            # A management command cleans up on KeyboardInterrupt, as on Ctrl-C in a terminal.
            services.append(Service("dicom", dicom, address, stop_signal=signal.SIGINT))
        return services, skipped

    @property
    def _filesystem_broker(self) -> bool:
        return settings.CELERY_BROKER_URL.startswith("filesystem://")

    def _broker_description(self) -> str:
        if self._filesystem_broker:
            return f"broker: filesystem ({settings.BROKER_DIR})"
        return f"broker: redis ({_without_password(settings.CELERY_BROKER_URL)})"

    def _child_environment(self) -> tuple[dict, str]:
        env = os.environ.copy()
        if settings.SETTINGS_MODULE:  # as --settings chose; None only under override_settings
            env["DJANGO_SETTINGS_MODULE"] = settings.SETTINGS_MODULE
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.BASE_DIR), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # kombu's filesystem transport keeps its exchange table in a folder named "control" relative to the
        # working directory; running the children inside the broker folder keeps it there, not in the repository.
        cwd = settings.BROKER_DIR if self._filesystem_broker else settings.BASE_DIR
        os.makedirs(cwd, exist_ok=True)
        return env, str(cwd)

    def _start(self, services: list[Service]) -> None:
        env, cwd = self._child_environment()
        for service in services:
            # A process group of its own: a terminal's Ctrl-C reaches serve only, and serve stops each
            # child exactly once (a second SIGINT would make Celery cold-stop its running tasks).
            service.process = subprocess.Popen(service.argv, env=env, cwd=cwd, process_group=0, preexec_fn=_die_with_parent)
            self.stdout.write(f"  {service.name:<7} {service.address}  [pid {service.process.pid}]")

    def _request_stop(self, signum, frame):
        self._stop_requested = signal.Signals(signum).name

    def _watch(self, services: list[Service]) -> Service | None:
        """Wait until a stop is requested (None) or a child exits on its own (that child)."""
        while self._stop_requested is None:
            for service in services:
                if service.process.poll() is not None:
                    return service
            time.sleep(POLL_INTERVAL)
        return None

    def _stop(self, services: list[Service], *, reason: str) -> None:
        running = [s for s in services if s.process.poll() is None]
        if running:
            self.stdout.write(f"serve: {reason}; stopping {', '.join(s.name for s in running)} (Ctrl-C again to kill)")
            self.stdout.flush()
            self._stop_requested = None
            for service in running:
                self._signal(service, service.stop_signal)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(s.process.poll() is None for s in running):
                if self._stop_requested or time.monotonic() > deadline:
                    stuck = [s.name for s in running if s.process.poll() is None]
                    self.stderr.write(f"serve: killing {', '.join(stuck)}")
                    break
                time.sleep(POLL_INTERVAL)
        # Whatever a child leaves in its process group (a pool process, the beat process) goes with it.
        for service in services:
            self._signal(service, signal.SIGKILL, group=True)
            service.process.wait()

    @staticmethod
    def _signal(service: Service, sig: signal.Signals, *, group: bool = False) -> None:
        try:
            if group:
                os.killpg(service.process.pid, sig)
            else:
                service.process.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass
