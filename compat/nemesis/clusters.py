"""The two systems under test, three nodes each, every node a broker and a voter of the
controller quorum, each node started in its own network namespace with `ip netns exec`
(which execs: the process started is the broker itself, so signals go to it)."""
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

KAFKA_PORT, CONTROLLER_PORT = 9092, 9093

# Short sessions so that a dead, paused or cut-off broker is fenced within seconds (the
# defaults, 9 s and 30 s, would leave few faults per minute visible), and a lag time short
# enough that a cut-off follower leaves the ISR during the 4-15 s a cut lasts.
SPATE_CONFIG = """\
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000
replica_lag_time_max_ms = 10000
offsets_topic_num_partitions = 6
transaction_state_num_partitions = 6
"""

KAFKA_PROPERTIES = """\
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{ip}:{port},CONTROLLER://{ip}:{cport}
advertised.listeners=PLAINTEXT://{ip}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=10000
unclean.leader.election.enable=false
"""


class Node:
    def __init__(self, cluster, i):
        self.cluster, self.i = cluster, i
        self.proc = None
        self.paused = False
        self.expected_down = False
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        log = open(self.cluster.log_path(self.i), "ab")
        log.write(f"=== start {time.strftime('%FT%TZ', time.gmtime())} ===\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.net.node_ns[self.i], *self.cluster.command(self.i)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=self.cluster.env())
        log.close()
        self.paused = False
        self.expected_down = False
        self.starts += 1

    def kill(self):
        self.expected_down = True
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.paused = False

    def stop(self, timeout=40):
        self.expected_down = True
        if not self.alive():
            return
        if self.paused:
            self.cont()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def cont(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False


class Cluster:
    name = "?"

    def __init__(self, net, run_dir):
        self.net = net
        self.dir = Path(run_dir)
        self.nodes = [Node(self, i) for i in range(3)]

    def env(self):
        return dict(os.environ)

    def log_path(self, i):
        return self.dir / f"node-{i}.log"

    def bootstrap(self):
        return ",".join(f"{self.net.ip(i)}:{KAFKA_PORT}" for i in range(3))

    def voters(self):
        return ",".join(f"{i}@{self.net.ip(i)}:{CONTROLLER_PORT}" for i in range(3))

    def start(self, timeout=180):
        for n in self.nodes:
            n.start()
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            self.wait_ready(n.i, deadline)

    def wait_ready(self, i, deadline):
        while not port_open(self.net.ip(i), KAFKA_PORT):
            if not self.nodes[i].alive():
                tail = "\n".join(self.log_path(i).read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"node {i} exited during start-up:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {i} not ready in time; see {self.log_path(i)}")
            time.sleep(0.3)

    def stop(self):
        for n in self.nodes:
            if n.paused:
                n.cont()
        for n in self.nodes:
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - best effort, the namespaces go anyway
                pass

    def kill_all(self):
        for n in self.nodes:
            try:
                if n.alive():
                    n.proc.send_signal(signal.SIGCONT)
                n.kill()
            except Exception:  # noqa: BLE001
                pass

    def partition_dir(self, i, topic, p):
        return self.data_dir(i) / f"{topic}-{p}"


class SpateCluster(Cluster):
    name = "spate"

    def __init__(self, net, run_dir, binary):
        super().__init__(net, run_dir)
        self.binary = binary
        self.config = self.dir / "spate.toml"
        self.config.write_text(SPATE_CONFIG)

    def data_dir(self, i):
        return self.dir / f"node-{i}"

    def command(self, i):
        ip = self.net.ip(i)
        return [str(self.binary), "--config", str(self.config), "--node-id", str(i),
                "--data-dir", str(self.data_dir(i)), "--listen", f"{ip}:{KAFKA_PORT}",
                "--controller-listen", f"{ip}:{CONTROLLER_PORT}",
                "--controller-quorum-voters", self.voters(), "--cores", "1"]

    def env(self):
        return dict(os.environ, RUST_BACKTRACE="1")


class KafkaCluster(Cluster):
    name = "kafka"

    def __init__(self, net, run_dir, libs):
        super().__init__(net, run_dir)
        self.libs = Path(libs)
        cluster_id = subprocess.run(
            ["java", "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        for i in range(3):
            props = self.dir / f"node-{i}.properties"
            props.write_text(KAFKA_PROPERTIES.format(
                node=i, voters=self.voters(), ip=net.ip(i), port=KAFKA_PORT,
                cport=CONTROLLER_PORT, data=self.data_dir(i)))
            subprocess.run(
                ["java", "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", "format", "-t",
                 cluster_id, "-c", str(props)],
                capture_output=True, text=True, timeout=180, check=True)

    def data_dir(self, i):
        return self.dir / f"node-{i}" / "data"

    def command(self, i):
        return ["java", "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.dir / f"node-{i}.properties")]

    def start(self, timeout=240):
        (self.dir / "log4j2.properties").write_text(LOG4J2)
        super().start(timeout)


LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.req.name = kafka.request.logger
logger.req.level = WARN
"""


def port_open(host, port, timeout=0.5):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _cstr(s):
    """A compact string (its length plus one as an unsigned varint, below 128 here)."""
    b = s.encode()
    return bytes([len(b) + 1]) + b


def _uvarint(data, pos):
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def active_controller(hosts, timeout=3.0):
    """The metadata quorum's leader, from DescribeQuorum v0 (flexible: request header v2,
    compact arrays and strings; any broker answers, forwarding to the active controller),
    asking each host in turn; None if no answer."""
    body = bytes([2]) + _cstr("__cluster_metadata") + bytes([2]) + struct.pack(">i", 0) \
        + b"\0\0\0"  # the tagged fields of partition, topic and request
    frame = struct.pack(">hhi", 55, 0, 7) + _kstr("nemesis") + b"\0" + body
    for host in hosts:
        try:
            with socket.create_connection((host, KAFKA_PORT), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(struct.pack(">i", len(frame)) + frame)
                n = struct.unpack(">i", _recv(s, 4))[0]
                data = _recv(s, n)
            _tags, pos = _uvarint(data, 4)  # after the correlation id
            err = struct.unpack_from(">h", data, pos)[0]
            ntopics, pos = _uvarint(data, pos + 2)
            if err or ntopics != 2:
                continue
            nlen, pos = _uvarint(data, pos)
            pos += nlen - 1
            nparts, pos = _uvarint(data, pos)
            if nparts != 2:
                continue
            _idx, perr, leader = struct.unpack_from(">ihi", data, pos)
            if perr == 0 and leader >= 0:
                return leader
        except (OSError, struct.error, IndexError):
            continue
    return None


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def new_uuid():
    return uuid.uuid4().hex
