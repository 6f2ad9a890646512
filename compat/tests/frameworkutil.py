"""Helpers for the framework suites (test_connect.py, test_streams.py, test_mirrormaker.py):
the classpaths built from compat/frameworks, a bounded Java process with its logs under
target/compat/runs/, a small REST client, and readers that collect a topic's records."""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource

from conftest import RUNS
from kafkautil import COMPAT, OP_TIMEOUT, admin

FRAMEWORKS = COMPAT / "frameworks"
FRAMEWORKS_JAR = FRAMEWORKS / "target" / "spate-compat-frameworks.jar"
CONNECT = FRAMEWORKS / "connect"
KEEP = bool(os.environ.get("SPATE_COMPAT_KEEP"))

# Quick JVM start-up on a small, shared machine.
JVM_OPTS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            "-Djava.awt.headless=true"]


def _maven(project: Path, stamp: Path, sources):
    """`mvn package` in `project` unless `stamp` is newer than every source (as compat/run.sh
    does; target/lib is emptied first so that no jar of an older version stays there)."""
    newest = max(p.stat().st_mtime for p in sources)
    if stamp.exists() and stamp.stat().st_mtime >= newest:
        return
    if shutil.which("mvn") is None:
        pytest.fail("maven is not installed (compat/run.sh installs the suite's tools)")
    shutil.rmtree(project / "target" / "lib", ignore_errors=True)
    subprocess.run(["mvn", "-q", "-B", "package"], cwd=project, check=True, timeout=900)
    stamp.touch()


def streams_classpath():
    """Kafka Streams 4.4.0 and the compat Streams app (compat/frameworks)."""
    sources = [p for p in (FRAMEWORKS / "src").rglob("*") if p.is_file()]
    _maven(FRAMEWORKS, FRAMEWORKS / "target" / "lib" / ".built",
           sources + [FRAMEWORKS / "pom.xml"])
    return f"{FRAMEWORKS_JAR}:{FRAMEWORKS / 'target' / 'lib'}/*"


def connect_classpath():
    """Kafka Connect 4.3.1 with the file connectors and MirrorMaker 2 (compat/frameworks/connect;
    its pom says why 4.3.1)."""
    _maven(CONNECT, CONNECT / "target" / "lib" / ".built", [CONNECT / "pom.xml"])
    return f"{CONNECT / 'target' / 'lib'}/*"


def run_dir(prefix):
    d = RUNS / f"{prefix}-{uuid.uuid4().hex[:10]}"
    d.mkdir(parents=True)
    return d


def wait_until(cond, timeout, what, procs=()):
    """Poll cond() until it returns a truthy value (returned); fail with the processes'
    output if one of them exits meanwhile or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = cond()
        if last:
            return last
        for p in procs:
            p.check_alive(what)
        if time.monotonic() > deadline:
            tails = "\n".join(p.tail() for p in procs)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(0.2)


class JavaProcess:
    """A framework JVM: stdout/stderr to NAME.out, slf4j log to NAME.log in `workdir`."""

    def __init__(self, name, classpath, main, args, workdir: Path, heap="384m"):
        self.name = name
        self.cmd = ["java", f"-Xmx{heap}", *JVM_OPTS,
                    f"-Dorg.slf4j.simpleLogger.logFile={workdir / (name + '.log')}",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                    "-Dorg.slf4j.simpleLogger.showDateTime=true",
                    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                    "-cp", classpath, main, *[str(a) for a in args]]
        self.out_path = workdir / f"{name}.out"
        self.log_path = workdir / f"{name}.log"
        self.workdir = workdir
        self.proc = None

    def start(self):
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self, what=""):
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode} "
                                 f"while waiting for {what}\n{self.tail()}")

    def stop(self, timeout=30.0):
        """SIGTERM and wait; the exit code, or None if it had to be killed."""
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def events(self):
        """JSON objects the process printed as `EVENT {...}` lines."""
        try:
            lines = self.out_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [json.loads(line[6:]) for line in lines if line.startswith("EVENT ")]

    def tail(self, n=40):
        parts = []
        for path in (self.out_path, self.log_path):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            # The errors are what explains a failure; keep them ahead of the plain tail.
            errors = [line for line in lines if " ERROR " in line or "Exception" in line]
            parts.append(f"--- {path.name}: {len(errors)} error lines (last 10) ---\n"
                         + "\n".join(errors[-10:])
                         + f"\n--- {path.name}: last {n} lines ---\n" + "\n".join(lines[-n:]))
        return f"=== {self.name} ===\n" + "\n".join(parts)


class Rest:
    """JSON over HTTP on loopback (Kafka Connect's REST API)."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method, path, body=None, timeout=10):
        """(status, decoded body); status 0 if the connection failed."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            return 0, str(e)


class TopicReader:
    """Reads every partition of a topic from offset 0 (no group) and keeps what it got."""

    def __init__(self, bootstrap, topic, partitions, isolation="read_uncommitted"):
        self.topic = topic
        self.records = []  # (partition, offset, key, value)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                           "enable.auto.commit": False, "auto.offset.reset": "error",
                           "fetch.wait.max.ms": 100, "enable.partition.eof": False,
                           "isolation.level": isolation})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

    def poll(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = self.c.poll(0.1)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            self.records.append((m.partition(), m.offset(), m.key(), m.value()))

    def wait_count(self, n, timeout, procs=()):
        """Read until at least n records arrived, then 1.5 s more to catch any extra."""
        wait_until(lambda: self.poll(0.3) or len(self.records) >= n, timeout,
                   f"{n} records on {self.topic} (have {len(self.records)})", procs)
        self.poll(1.5)
        return self.records

    def close(self):
        self.c.close()


def topic_configs(bootstrap, topic, names):
    """{name: value} of a topic's effective configs, through DescribeConfigs."""
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    a = admin(bootstrap)  # kept alive until the answer is in
    entries = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(timeout=OP_TIMEOUT)
    return {n: entries[n].value if n in entries else None for n in names}


def list_topics(bootstrap):
    a = admin(bootstrap)
    return set(a.list_topics(timeout=OP_TIMEOUT).topics)
