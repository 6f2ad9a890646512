"""Fixtures for the Spate compat suite.

The suite drives a broker with real third-party Kafka clients. By default it starts
`target/release/spate` (built beforehand by compat/run.sh) on a free loopback port with a
fresh data dir under target/compat/runs/. With SPATE_COMPAT_BOOTSTRAP=host:port it uses
an externally started broker instead (e.g. compat/reference-kafka.sh); restart tests are
skipped in that mode.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

COMPAT = Path(__file__).resolve().parent.parent
ROOT = COMPAT.parent
RUNS = ROOT / "target" / "compat" / "runs"
EXTERNAL = os.environ.get("SPATE_COMPAT_BOOTSTRAP", "").strip()
SPATE_BIN = Path(os.environ.get("SPATE_BIN", str(ROOT / "target" / "release" / "spate")))
SPATE_CORES = os.environ.get("SPATE_COMPAT_CORES", "2")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class SpateBroker:
    """One spate process on a fixed port and data dir; can be stopped and restarted."""

    def __init__(self, data_dir: Path, port: int, extra_args=(), listen_flag=True):
        self.data_dir = data_dir
        self.port = port
        # False: the listeners come from a config file in extra_args (test_security.py),
        # and `port` is one of them.
        self.listen_flag = listen_flag
        # More flags for every start (e.g. the schema registry's endpoint).
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = data_dir.parent / (data_dir.name + ".log")
        self.starts = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30.0):
        self.launch()
        self.wait_ready(timeout)

    def launch(self):
        """Start the process without waiting for it (the nodes of a cluster start
        together: each waits for the quorum)."""
        if not SPATE_BIN.exists():
            pytest.fail(f"{SPATE_BIN} does not exist: build it first "
                        "(cargo build --release -p spate-node, or compat/run.sh)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n=== start #{self.starts} ===\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [str(SPATE_BIN), "--data-dir", str(self.data_dir),
             *(["--listen", self.bootstrap] if self.listen_flag else []),
             "--cores", SPATE_CORES, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        log.close()

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"spate exited with {self.proc.returncode} during start-up:\n"
                            + self.log_tail())
            if port_accepts(self.port) and self.logged_ready():
                return
            time.sleep(0.05)
        # Leave a stack of every thread in the log when a broker hangs in start-up.
        self.dump_threads()
        self.kill()
        pytest.fail(f"spate did not get ready on {self.bootstrap} within {timeout}s:\n"
                    + self.log_tail())

    def logged_ready(self):
        """Has this start logged "spate ready to serve" (internal topics created)? The
        port accepts before that. Brokers other than spate (the Kafka reference) are
        taken as ready once they accept."""
        if SPATE_BIN.name != "spate":
            return True
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return "spate ready to serve" in text.rsplit("=== start #", 1)[-1]

    def dump_threads(self):
        if self.proc is None or self.proc.poll() is not None or shutil.which("gdb") is None:
            return
        with open(self.log_path, "ab") as log:
            log.write(b"\n=== threads of a broker that did not get ready ===\n")
            log.flush()
            subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex", "thread apply all bt"],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=60, check=False)

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit code (None if it had to be SIGKILLed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_port_closed(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and port_accepts(self.port, 0.2):
            time.sleep(0.05)

    def log_tail(self, n=60):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _new_broker(extra_args=()):
    RUNS.mkdir(parents=True, exist_ok=True)
    return SpateBroker(RUNS / f"spate-{uuid.uuid4().hex[:10]}", free_port(), extra_args)


@pytest.fixture(scope="session")
def session_broker():
    """The broker shared by the whole session (None against an external broker)."""
    if EXTERNAL:
        yield None
        return
    broker = _new_broker()
    broker.start()
    yield broker
    rc = broker.stop()
    if rc not in (0, None):
        print(f"spate exited with {rc} after SIGTERM:\n{broker.log_tail()}")
    if rc == 0 and not os.environ.get("SPATE_COMPAT_KEEP"):
        shutil.rmtree(broker.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def bootstrap(session_broker):
    """Bootstrap address of the broker under test."""
    return EXTERNAL if session_broker is None else session_broker.bootstrap


@pytest.fixture(autouse=True)
def _shared_broker_alive(request):
    """Fails the test during which the shared spate died (with its log), and starts it
    again on the same data dir and port so that later tests still run."""
    if "bootstrap" not in request.fixturenames or EXTERNAL:
        yield
        return
    broker = request.getfixturevalue("session_broker")
    if broker.proc is None or broker.proc.poll() is not None:
        broker.start()
    yield
    if broker.proc.poll() is not None:
        code = broker.proc.returncode
        tail = broker.log_tail()
        broker.start()
        pytest.fail(f"spate exited with {code} during this test:\n{tail}")


@pytest.fixture
def restartable_broker():
    """A private spate for restart tests; not available against an external broker."""
    if EXTERNAL:
        pytest.skip("restart tests need a broker the suite starts itself")
    broker = _new_broker()
    broker.start()
    yield broker
    broker.stop()
    if not os.environ.get("SPATE_COMPAT_KEEP"):
        shutil.rmtree(broker.data_dir, ignore_errors=True)


@pytest.fixture
def topic_name(request):
    """A unique topic name per test."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")
    return f"c-{base[:60]}-{uuid.uuid4().hex[:6]}"
