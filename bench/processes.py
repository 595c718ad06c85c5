"""Child processes of a benchmark: started in their own session, logged to a file, always stopped on exit."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
_running: list[subprocess.Popen] = []


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM if the benchmark dies without stopping it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: list[str], *, log: Path, env: dict | None = None, cwd: str | Path | None = None) -> subprocess.Popen:
    """Start argv with stdout and stderr to log; it is stopped by stop() or, at the latest, at exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd, preexec_fn=_die_with_parent
        )
    process.log_path = log  # type: ignore[attr-defined]
    _running.append(process)
    return process


def stop(process: subprocess.Popen, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int | None:
    """Ask process to stop with sig, kill it after timeout; returns its exit code."""
    if process.poll() is None:
        try:
            process.send_signal(sig)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
    if process in _running:
        _running.remove(process)
    return process.returncode


@atexit.register
def stop_all() -> None:
    for process in list(_running):
        stop(process, timeout=10)


def wait_for_port(port: int, *, process: subprocess.Popen, timeout: float = 60, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on port; fail early if process exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} before listening; see {process.log_path}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s; see {process.log_path}")


def run(argv: list[str], *, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 300) -> str:
    """Run argv to completion and return its standard output; raise with its standard error on failure."""
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n{result.stderr.strip()[-3000:]}")
    return result.stdout


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def environment_without(*names: str) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid and its live descendants (threads included), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent_of, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent_of[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, frontier = 0.0, {pid}
    while frontier:
        total += sum(cpu.get(p, 0.0) for p in frontier)
        frontier = {child for child, parent in parent_of.items() if parent in frontier}
    return total
