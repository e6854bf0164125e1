"""The resident worker host (lib/run/resident.py): runs reuse one host, it is started without the provider
keys yet each worker calls with its caller's, it answers only the user's key, it falls back when its
directory is not private, and it goes away when idle."""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import socket
import time
from pathlib import Path

import pytest

from lib.run import resident
from tests.llm_server import LLMServer
from tests.test_runner import ROOT, make_dataset, run


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory of this test's own, so its host is not another test's."""
    directory = tmp_path / "rt"
    monkeypatch.setenv("REVIEW_RUNTIME_DIR", str(directory))
    yield directory
    with contextlib.suppress(resident.ResidentUnavailable):  # a test made it unusable on purpose
        resident.stop_all()


def _gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not resident.RemoteWorker(pid).is_alive():
            return True
        time.sleep(0.05)
    return False


def test_runs_reuse_one_host_that_never_holds_the_keys(engine, llm_server: LLMServer, runtime: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(engine, n=6)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-first-key")
    first = run(engine, llm_server, name="one", workers="per-side")
    host = resident.ask("ping")
    assert first.status == "complete" and first.workers == "per-side" and host is not None
    assert {r.auth for r in llm_server.log} == {"Bearer sk-first-key"}
    assert "Threads:\t1\n" in Path(f"/proc/{host}/status").read_text()  # it forks: no thread may hold a lock
    environ = Path(f"/proc/{host}/environ").read_bytes()
    assert b"sk-first-key" not in environ and b"OPENAI_API_KEY" not in environ

    monkeypatch.setenv("OPENAI_API_KEY", "sk-second-key")  # a later run with another key, same host
    logged = len(llm_server.log)
    second = run(engine, llm_server, name="two", workers="per-side")
    assert second.status == "complete" and resident.ask("ping") == host
    assert {r.auth for r in llm_server.log[logged:]} == {"Bearer sk-second-key"}
    assert len(llm_server.log) - logged == 12

    assert resident.stop_all() == [host]
    assert _gone(host) and not list(runtime.glob("*.sock"))


def test_only_the_users_key_is_answered(runtime: Path) -> None:
    place = resident.Place.here()
    resident.connect(place).close()  # started and warm
    with pytest.raises(multiprocessing.AuthenticationError):
        multiprocessing.connection.Client(place.socket, family="AF_UNIX", authkey=b"x" * 32)
    with socket.socket(socket.AF_UNIX) as raw:  # a peer that sends junk instead of answering
        raw.connect(place.socket)
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw.settimeout(5)
        raw.recv(1024)  # the challenge; the junk is not an answer, and the connection ends
    assert resident.ask("ping") is not None
    assert oct(runtime.stat().st_mode & 0o777) == "0o700"
    assert oct(place.key_file.stat().st_mode & 0o777) == "0o600"


def test_a_directory_others_can_enter_is_refused_and_runs_fall_back(engine, llm_server: LLMServer, runtime: Path
                                                                    ) -> None:
    runtime.mkdir(mode=0o755)
    runtime.chmod(0o755)
    with pytest.raises(resident.ResidentUnavailable, match="mode 0700"):
        resident.runtime_dir()
    make_dataset(engine, n=4)
    result = run(engine, llm_server, workers="per-side")  # this command's own fork server instead
    assert result.status == "complete" and result.workers == "per-side" and llm_server.calls() == 8
    assert not list(runtime.iterdir())


def test_an_idle_host_exits_and_removes_its_socket(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEW_RESIDENT_IDLE_S", "0.5")
    place = resident.Place.here()
    resident.connect(place).close()
    host = resident.ask("ping", place)
    assert host is not None and _gone(host)
    assert not place.host_alive() and not os.path.exists(place.socket)


def test_the_fingerprint_follows_code_and_import_settings_not_keys(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lib").mkdir()
    module = tmp_path / "lib" / "a.py"
    module.write_text("x = 1\n")
    monkeypatch.setattr(resident, "ROOT", tmp_path)
    before = resident.fingerprint()
    module.write_text("x = 22\n")
    edited = resident.fingerprint()
    monkeypatch.setenv("LITELLM_LOG", "DEBUG")
    configured = resident.fingerprint()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-whatever")
    monkeypatch.setenv("LITELLM_MODE", "PRODUCTION")  # what importing litellm through lib.run.llm sets
    assert len({before, edited, configured}) == 3 and resident.fingerprint() == configured


@pytest.mark.slow
def test_workers_status_and_stop_from_the_cli(runtime: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "lib", "workers", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("status").startswith("no worker host running in ")
    resident.connect().close()
    host = resident.ask("ping")
    assert cli("status") == f"worker host pid {host}: this code and settings; exits after 300 s without a run\n"
    assert cli("stop") == f"stopped 1 worker host(s): pid {host}\n"
    assert _gone(host) and cli("status").startswith("no worker host running")


def test_a_host_that_refuses_this_process_makes_runs_fall_back(engine, llm_server: LLMServer, runtime: Path) -> None:
    """The key file replaced under a live host: a run falls back to its own fork server instead of failing."""
    place = resident.Place.here()
    resident.connect(place).close()
    host = resident.ask("ping", place)
    place.key_file.write_bytes(b"y" * 32)  # 0600 kept: only the content differs from the host's
    with pytest.raises(resident.ResidentUnavailable, match="refused this process"):
        resident.connect(place)
    make_dataset(engine, n=4)
    result = run(engine, llm_server, workers="per-side")
    assert result.status == "complete" and result.workers == "per-side" and llm_server.calls() == 8
    assert resident.ask("ping", place) is None  # not one this process can talk to
    os.kill(host, 15)
    assert _gone(host)


@pytest.mark.slow
def test_a_bad_idle_setting_is_refused_in_one_line_and_runs_fall_back(engine, llm_server: LLMServer, runtime: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("REVIEW_RESIDENT_IDLE_S", "ten minutes")
    done = subprocess.run([sys.executable, "-m", "lib", "workers", "status"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: REVIEW_RESIDENT_IDLE_S must be a positive number of seconds, not 'ten minutes'\n"
    make_dataset(engine, n=4)
    result = run(engine, llm_server, workers="per-side")  # this command's own fork server: no host started
    assert result.status == "complete" and llm_server.calls() == 8 and not list(runtime.glob("*.sock"))
