"""Running the `smsworker` command line from tests, as subprocesses.

Nothing listens anywhere but on 127.0.0.1, and every process a test starts is
killed when the test ends. conftest.py makes the fixtures here available to
every test module.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fake_twilio import FakeTwilio

SMSWORKER = Path(sys.executable).parent / "smsworker"
STARTED_LINE = "smsworker started"
# How long a test waits for a process to print a line, exit or do its work.
WAIT_S = 15.0
# Long enough that only notifications make the worker look for new rows within a
# test, so a trigger that fails to notify shows up as a timeout.
NOTIFICATION_ONLY_POLL_S = "60"


def cli_env(
    database_url: str | None,
    twilio: FakeTwilio | None = None,
    *,
    open_list: bool = True,
    **extra: str,
) -> dict[str, str]:
    """Build the environment of an smsworker process: this one, minus its settings.

    Processes share one open list unless `open_list` is False, which makes
    lists private to groups as they are by default.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TWILIO_", "SMSWORKER_", "PG"))
        and name not in {"DATABASE_URL", "TEST_DATABASE_URL", "TZ"}
        and not name.lower().endswith("_proxy")
    }
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if twilio is not None:
        env["TWILIO_ACCOUNT_SID"] = twilio.account_sid
        env["TWILIO_AUTH_TOKEN"] = twilio.auth_token
        env["TWILIO_API_BASE_URL"] = twilio.url
    if open_list:
        env["SMSWORKER_OPEN"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run one smsworker command to completion. A timeout kills it and fails the test."""
    return subprocess.run(
        [str(SMSWORKER), *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CliProcess:
    """A long-running smsworker process whose stdout and stderr are read as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.args = list(args)
        self.popen = subprocess.Popen(
            [str(SMSWORKER), *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A session of its own keeps signals sent to the test runner's process
            # group, such as Ctrl-C, away from the worker.
            start_new_session=True,
        )
        self._changed = threading.Condition()
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._closed_streams: set[str] = set()
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=("stdout", self.popen.stdout), daemon=True),
            threading.Thread(target=self._read, args=("stderr", self.popen.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: Any) -> None:
        try:
            for line in stream:
                with self._changed:
                    self._lines[name].append(line)
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # The stream was closed by close().
        finally:
            with self._changed:
                self._closed_streams.add(name)
                self._changed.notify_all()

    def output(self, name: str) -> str:
        """Return what the process wrote to `name` ("stdout" or "stderr") so far."""
        with self._changed:
            return "".join(self._lines[name])

    def wait_for_output(self, name: str, text: str, timeout: float = WAIT_S) -> None:
        """Wait until `text` appears on the stream, and fail early when the stream closes."""

        def found_or_closed() -> bool:
            return text in "".join(self._lines[name]) or name in self._closed_streams

        with self._changed:
            self._changed.wait_for(found_or_closed, timeout)
            found = text in "".join(self._lines[name])
        if not found:
            raise AssertionError(
                f"{text!r} did not appear on the {name} of smsworker {' '.join(self.args)} "
                f"within {timeout} s (exit code {self.popen.poll()}).\n"
                f"stdout:\n{self.output('stdout')}\nstderr:\n{self.output('stderr')}"
            )

    @property
    def stderr(self) -> str:
        """Return what the process wrote to stderr so far."""
        return self.output("stderr")

    def wait_for_stderr(self, text: str, timeout: float = WAIT_S) -> None:
        self.wait_for_output("stderr", text, timeout)

    def send_signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send `signum`, wait for the exit, and return the exit code and the seconds it took."""
        signalled = time.monotonic()
        self.send_signal(signum)
        code = self.wait_exit(timeout=30)
        return code, time.monotonic() - signalled

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        """Wait for the process to exit and its output to be read, and return the exit code."""
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start_cli(tmp_path: Path) -> Iterator[Callable[..., CliProcess]]:
    """Start smsworker processes in tmp_path. Each one is killed when the test ends."""
    started: list[CliProcess] = []

    def start(*args: str, env: dict[str, str]) -> CliProcess:
        process = CliProcess(args, env, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.fixture
def start_run(start_cli: Callable[..., CliProcess]) -> Callable[..., CliProcess]:
    """Start `smsworker run` and wait until it prints `wait_for`, its start line by default."""

    def start(
        env: dict[str, str],
        *options: str,
        metrics_port: int = 0,
        poll_interval: str = NOTIFICATION_ONLY_POLL_S,
        wait_for: str = STARTED_LINE,
    ) -> CliProcess:
        process = start_cli(
            "run",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
            "--poll-interval",
            poll_interval,
            *options,
            env=env,
        )
        process.wait_for_output("stderr", wait_for)
        return process

    return start


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape_metrics(port: int) -> dict[str, float]:
    """Fetch the worker's /metrics and return each sample's value by its name and labels."""
    # The request bypasses any proxy, because it must reach the worker on 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples
