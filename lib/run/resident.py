"""The resident worker host: a fork server that outlives one command.

A run's workers need litellm imported before their first call, and that import costs ~2 s of CPU. The
per-command fork server (lib/run/forkserver.py) pays it on every run; this host pays it once. The first
run (or the Run page) starts it, detached in its own session; later runs fork their workers from it in
milliseconds. It exits after `REVIEW_RESIDENT_IDLE_S` seconds (default 900) with no request and no live
worker. A host is reused only by the same interpreter, code and import-time settings: its socket is named
by their fingerprint, so an edited lib/ or another venv never runs on an old host.

Safety: the socket lives in a directory only the user can enter (checked, not assumed), and every
connection must answer an HMAC challenge with a random key only the user can read (multiprocessing's
authentication), so no other user can ask the host for anything. Provider keys reach a worker in memory
with its task, over that socket, as they reached the per-command fork server's workers; the host itself is
started without them (`_host_env`) and nothing here writes them anywhere.

`REVIEW_RESIDENT=0` turns it off: each run then starts its own fork server, as before. Anything that keeps
the host from starting (no AF_UNIX, a directory others can enter, a socket path too long) falls back to that
too (`ResidentUnavailable`), so a run never fails for the sake of a faster start.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import re
import secrets
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from lib.errors import ReviewError

APP_DIR = "upgrade-review"
# What every worker needs, imported once by the host (litellm warmed up, the executor, the store's tables): by
# name, like multiprocessing's forkserver preload, since that module imports the executor, which uses the host.
PRELOAD = "lib.run.worker_preload"
ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 900.0  # a host with no request and no live worker for this long exits
START_TIMEOUT_S = 120.0  # a cold host imports litellm first: seconds on a loaded machine
AUTH_TIMEOUT_S = 10.0  # a connection that does not authenticate by then is dropped
_POLL_S = 0.02
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux
# Names of environment variables the host is started without (it makes no call itself).
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH", re.IGNORECASE)
# Settings read when modules are imported: a host started under others must not serve this process.
_IMPORT_TIME_ENV = re.compile(r"^(PYTHON|LITELLM_)")


class ResidentUnavailable(ReviewError):
    """The resident host cannot be used here; the caller falls back to a per-command fork server."""


def enabled() -> bool:
    return os.environ.get("REVIEW_RESIDENT", "1") != "0" and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")


def usable() -> bool:
    """Enabled, and its runtime directory is private (a host will start or is running)."""
    if not enabled():
        return False
    try:
        runtime_dir()
    except ResidentUnavailable:
        return False
    return True


# ---- where the host lives ---------------------------------------------------------------------------
def runtime_dir() -> Path:
    """REVIEW_RUNTIME_DIR, else `upgrade-review` in the user's runtime directory (XDG_RUNTIME_DIR), else
    /tmp/upgrade-review-UID; created 0700, and refused unless it is the user's own and closed to others."""
    if os.environ.get("REVIEW_RUNTIME_DIR"):
        path = Path(os.environ["REVIEW_RUNTIME_DIR"])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / APP_DIR
    else:
        path = Path("/tmp") / f"{APP_DIR}-{os.getuid()}"  # noqa: S108  - checked below: ours, 0700
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ResidentUnavailable(f"runtime directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ResidentUnavailable(f"runtime directory {path} is not the user's own with mode 0700")
    return path


def fingerprint() -> str:
    """What a host must share with its callers: interpreter, the code of lib/, import-time settings."""
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}".encode())
    for path in sorted((ROOT / "lib").rglob("*.py")):
        info = path.stat()
        digest.update(f"{path}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
    for name, value in sorted(_import_settings().items()):
        digest.update(f"{name}={value}\0".encode())
    return digest.hexdigest()[:16]


def _import_settings() -> dict[str, str]:
    """The environment's import-time settings as a worker sees them: lib.run.llm forces the local price map
    and defaults LITELLM_MODE before importing litellm (so importing it here must not change them)."""
    settings = {name: value for name, value in os.environ.items() if _IMPORT_TIME_ENV.match(name)}
    settings.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    settings.setdefault("LITELLM_MODE", "PRODUCTION")
    return settings


class Place:
    """The files of one host: its socket, the lock it holds while alive, the shared authentication key."""

    def __init__(self, directory: Path, fp: str):
        self.fingerprint = fp
        self.socket = str(directory / f"workers-{fp}.sock")
        self.lock = directory / f"workers-{fp}.lock"
        self.key_file = directory / "authkey"
        if len(self.socket) > _MAX_SOCKET_PATH:
            raise ResidentUnavailable(f"socket path too long for AF_UNIX: {self.socket}")

    @classmethod
    def here(cls) -> Place:
        return cls(runtime_dir(), fingerprint())

    def authkey(self) -> bytes:
        """32 random bytes in a 0600 file, made once (exclusive create: two first callers agree)."""
        try:
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
        key = self.key_file.read_bytes()
        if len(key) != 32 or self.key_file.stat().st_mode & 0o077:
            raise ResidentUnavailable(f"{self.key_file} is not a private 32-byte key")
        return key

    def host_alive(self) -> bool:
        """A live host holds its lock for its whole life (the kernel releases it when the host dies)."""
        with open(self.lock, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


# ---- the caller's side ----------------------------------------------------------------------------
def _host_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not _SECRET_NAME.search(k)}


def ensure_started(place: Place | None = None) -> Place:
    """Start a host for this code and settings unless one is alive; returns at once (it imports litellm
    in the background). Raises ResidentUnavailable when a host cannot be used here."""
    place = place or Place.here()
    place.authkey()
    idle_seconds()  # a bad setting is said here, not by a host that would exit at once
    if not place.host_alive():
        subprocess.Popen(  # noqa: S603  - our own interpreter and module, no shell
            [sys.executable, "-m", "lib.run.resident", place.socket],
            cwd=ROOT, env=_host_env(), start_new_session=True, close_fds=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return place


def connect(place: Place | None = None, timeout: float = START_TIMEOUT_S) -> Connection:
    """An authenticated connection to the host, starting one if needed and waiting while it warms up."""
    place = ensure_started(place)
    key, deadline, started_at = place.authkey(), time.monotonic() + timeout, time.monotonic()
    while True:
        try:
            return Client(place.socket, family="AF_UNIX", authkey=key)
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # not listening yet (still importing), or a dead host's socket file
        except (AuthenticationError, EOFError, OSError) as exc:  # e.g. a key file replaced under a live host
            raise ResidentUnavailable(f"the worker host at {place.socket} refused this process: {exc}") from None
        if time.monotonic() > deadline:
            raise ResidentUnavailable(f"no worker host answered at {place.socket} in {timeout:.0f} s")
        if not place.host_alive() and time.monotonic() - started_at > 5.0:
            raise ResidentUnavailable("the worker host exited while starting")
        time.sleep(_POLL_S)


class RemoteWorker:
    """A worker forked by the host: the same handle as a multiprocessing Process, by pid (it is the host's
    child, not ours, so it is watched with signal 0 rather than waited for)."""

    exitcode = None

    def __init__(self, pid: int):
        self.pid = pid

    def is_alive(self) -> bool:
        return _alive(self.pid)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(_POLL_S)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Running, not a zombie (a host started by a long-lived process stays its zombie until reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def start_worker(target: Callable[[Any, Connection], None], task: Any,
                 place: Place | None = None) -> tuple[RemoteWorker, Connection]:
    """Have the host fork a worker running `target(task, connection)` (lib.run.executor.worker_main, sent by
    reference); the connection is the worker's pipe: progress in, grow/stop out, and its end (even kill -9
    of this process) is the worker's EOF."""
    conn = connect(place)
    try:
        conn.send(("worker", target, task))
        kind, pid = conn.recv()
    except (EOFError, OSError) as exc:
        conn.close()
        raise ResidentUnavailable(f"the worker host did not start a worker: {exc or 'closed'}") from None
    if kind != "pid":
        conn.close()
        raise ResidentUnavailable(f"the worker host answered {kind!r}")
    return RemoteWorker(pid), conn


def key_statuses(pairs: list[tuple[str, str | None]]) -> list[Any]:
    """`lib.catalog.keys.key_status` of each (model, api_base) for this process's environment and directory:
    answered by the host when it can be used (litellm is imported there, so this process need not import it:
    ~2 s), else here."""
    from lib.catalog.keys import key_status

    if usable():
        try:
            return _host_key_statuses(pairs)
        except ResidentUnavailable:
            pass
    return [key_status(model, api_base) for model, api_base in pairs]


def _host_key_statuses(pairs: list[tuple[str, str | None]]) -> list[Any]:
    with connect() as conn:
        try:
            conn.send(("key_status", pairs, dict(os.environ), os.getcwd()))
            kind, value = conn.recv()
        except (EOFError, OSError) as exc:
            raise ResidentUnavailable(f"the worker host did not answer: {exc or 'closed'}") from None
    if kind != "ok":
        raise ResidentUnavailable(f"the worker host could not tell: {value}")
    return list(value)


def ask(request: str, place: Place | None = None) -> Any:
    """`ping` -> the host's pid; `exit` -> the host stops (its running workers finish on their own).
    None if no host is alive."""
    place = place or Place.here()
    if not place.host_alive():
        return None
    try:
        with Client(place.socket, family="AF_UNIX", authkey=place.authkey()) as conn:
            conn.send((request,))
            return conn.recv()
    except (AuthenticationError, EOFError, OSError):
        return None  # starting (no socket yet), stopping, or not one we can talk to


def hosts() -> list[tuple[Place, int]]:
    """Every live host in the runtime directory, whatever its fingerprint, with its pid."""
    directory = runtime_dir()
    places = [Place(directory, sock.stem.removeprefix("workers-")) for sock in sorted(directory.glob("workers-*.sock"))]
    found = []
    for place in places:
        pid = ask("ping", place)
        if pid is not None:
            found.append((place, pid))
    return found


def stop_all() -> list[int]:
    """Stop every host in the runtime directory; their pids."""
    return [pid for place, _ in hosts() if (pid := ask("exit", place)) is not None]


# ---- the host's side ------------------------------------------------------------------------------
@contextmanager
def _held(lock: Path) -> Iterator[bool]:
    """The host's lock, held for its life; False if another host has it (a caller's check holds it for
    microseconds, so a few retries tell the two apart)."""
    with open(lock, "a") as fh:
        for _ in range(50):
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(_POLL_S)
                continue
            yield True
            return
        yield False


def serve(place: Place, idle_s: float) -> None:
    """Import what workers need, then fork one child per connection until idle for `idle_s`."""
    with _held(place.lock) as mine:
        if not mine:
            return  # another host serves this fingerprint
        importlib.import_module(PRELOAD)

        key = place.authkey()
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
        with _listening(place.socket) as listener:
            _accept_loop(listener, key, idle_s)


@contextmanager
def _listening(path: str) -> Iterator[socket.socket]:
    if os.path.exists(path):
        os.unlink(path)  # a dead host's socket: we hold the lock, so no live host owns it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    try:
        yield listener
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)


class _Stop(Exception):
    """SIGTERM (or an `exit` request): leave the accept loop, closing and removing the socket."""


def _stop(*_: Any) -> None:
    raise _Stop


def _accept_loop(listener: socket.socket, key: bytes, idle_s: float) -> None:
    """Idle time counts from the last request or the last worker's end (workers do not need the host: one
    still running when it stops finishes on its own)."""
    children: set[int] = set()
    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            children = {pid for pid in children if _alive(pid)}
            ready, _, _ = select.select([listener], [], [], 1.0 if children else idle_s)
            if not ready:
                if children:
                    continue
                return
            sock, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                _child(sock, key)  # never returns
            sock.close()
            children.add(pid)
    except _Stop:
        return


def _child(sock: socket.socket, key: bytes) -> None:
    """One connection, in its own process: authenticate, then serve its single request."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn = Connection(sock.detach())
        signal.alarm(int(AUTH_TIMEOUT_S))  # a silent peer cannot hold this process
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
        request = conn.recv()
        signal.alarm(0)
        code = _serve_request(conn, request)
    except BaseException:  # noqa: BLE001  - a bad peer or a stopped worker: this process only ends
        pass
    finally:
        os._exit(code)


def _serve_request(conn: Connection, request: tuple[Any, ...]) -> int:
    kind = request[0]
    if kind == "worker":
        target, task = request[1], request[2]
        conn.send(("pid", os.getpid()))
        target(task, conn)
        return 0
    if kind == "key_status":
        conn.send(_key_statuses(*request[1:]))
    elif kind == "ping":
        conn.send(os.getppid())
    elif kind == "exit":
        conn.send(os.getppid())
        os.kill(os.getppid(), signal.SIGTERM)
    return 0


def idle_seconds() -> float:
    """REVIEW_RESIDENT_IDLE_S, else IDLE_S; a value that is not a positive number is refused."""
    text = os.environ.get("REVIEW_RESIDENT_IDLE_S")
    if text is None:
        return IDLE_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # also NaN
        raise ResidentUnavailable(f"REVIEW_RESIDENT_IDLE_S must be a positive number of seconds, not {text!r}")
    return value


def _key_statuses(pairs: list[tuple[str, str | None]], env: dict[str, str], cwd: str) -> tuple[str, Any]:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)  # the app's secrets file is read relative to it
    try:
        from lib.catalog.keys import key_status

        return "ok", [key_status(model, api_base) for model, api_base in pairs]
    except Exception as exc:  # noqa: BLE001  - the caller then asks litellm itself
        return "failed", repr(exc)


def main(argv: list[str]) -> None:
    """The host process that ensure_started runs, detached (this module as __main__, its socket path)."""
    path = Path(argv[0])
    serve(Place(path.parent, path.stem.removeprefix("workers-")), idle_seconds())


if __name__ == "__main__":
    main(sys.argv[1:])
