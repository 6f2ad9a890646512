"""Helpers for the consumer-group and idempotent-producer compat tests (test_groups.py,
test_idempotent_proxy.py): bounded group consumers, a raw Kafka protocol client for
requests no client lets us send on purpose (stale generations, unknown members), and a
connection-cutting TCP proxy."""
import os
import socket
import struct
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from conftest import SpateBroker
from kafkautil import OP_TIMEOUT

# Kafka error codes used by the group tests.
NONE = 0
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
FENCED_INSTANCE_ID = 82
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
RETRIABLE_COORDINATOR_ERRORS = (14, 15, 16)
GROUP_SUBSCRIBED_TO_TOPIC = 86


def group_id(prefix="g"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def group_consumer_conf(bootstrap, group, **extra):
    conf = {"bootstrap.servers": bootstrap, "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100, "enable.partition.eof": False,
            "socket.timeout.ms": 10000}
    conf.update(extra)
    return conf


class TrackedConsumer:
    """A confluent-kafka group consumer that records its rebalance callbacks and what it
    read; `step()` polls once and commits each record synchronously after "processing"."""

    def __init__(self, bootstrap, group, topics, name, commit=True, **extra):
        self.name = name
        self.commit = commit
        self.records = []       # (partition, offset, key, value)
        self.assignment = set()
        self.events = []        # ("assign"|"revoke"|"lost", sorted partitions)
        self.c = Consumer(group_consumer_conf(bootstrap, group, **extra))
        self.c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)
        self.closed = False

    def _on_assign(self, c, parts):
        self.events.append(("assign", sorted(p.partition for p in parts)))
        self.assignment = {p.partition for p in parts}

    def _on_revoke(self, c, parts):
        self.events.append(("revoke", sorted(p.partition for p in parts)))
        self.assignment = set()

    def _on_lost(self, c, parts):
        self.events.append(("lost", sorted(p.partition for p in parts)))
        self.assignment = set()

    def step(self, timeout=0.1):
        m = self.c.poll(timeout)
        if m is None:
            return None
        if m.error():
            raise KafkaException(m.error())
        self.records.append((m.partition(), m.offset(), m.key(), m.value()))
        if self.commit:
            self.c.commit(message=m, asynchronous=False)
        return m

    def close(self):
        if not self.closed:
            self.closed = True
            self.c.close()


def poll_until(consumers, cond, timeout=OP_TIMEOUT, what="condition"):
    """Poll every open consumer in turn until cond() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for c in consumers:
            if not c.closed:
                c.step(0.05)
    if cond():
        return
    state = {c.name: (sorted(c.assignment), len(c.records), c.events) for c in consumers}
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {state}")


def drain(consumers, seconds=1.0):
    """Keep polling for a while (to catch duplicates that would arrive late)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in consumers:
            if not c.closed:
                c.step(0.05)


def committed(bootstrap, group, topic, partitions, timeout=OP_TIMEOUT):
    """Committed offsets (OffsetFetch through confluent-kafka); retried while the
    coordinator answers a retriable error (e.g. still loading after a restart)."""
    c = Consumer(group_consumer_conf(bootstrap, group))
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                res = c.committed([TopicPartition(topic, p) for p in range(partitions)],
                                  timeout=OP_TIMEOUT)
                return {tp.partition: tp.offset for tp in res}
            except KafkaException as e:
                if not e.args[0].retriable() and e.args[0].code() not in RETRIABLE_COORDINATOR_ERRORS \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# Raw protocol client (non-flexible request versions; enough for the group APIs).

def _str(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _nstr(s):
    return struct.pack(">h", -1) if s is None else _str(s)


def _bytes(b):
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b


class Reader:
    def __init__(self, data):
        self.d = data
        self.o = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)
        self.o += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def str(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.d[self.o:self.o + n].decode()
        self.o += n
        return s

    def bytes(self):
        n = self.i32()
        if n < 0:
            return None
        b = self.d[self.o:self.o + n]
        self.o += n
        return b

    def array(self, item):
        n = self.i32()
        return [] if n < 0 else [item(self) for _ in range(n)]


def consumer_protocol_metadata(topics, version=0):
    """ConsumerProtocolSubscription v0: version, topics, user_data."""
    body = struct.pack(">h", version) + struct.pack(">i", len(topics))
    body += b"".join(_str(t) for t in topics) + _bytes(None)
    return body


def consumer_protocol_assignment(topic, partitions):
    """ConsumerProtocolAssignment v0: version, [topic, [partition]], user_data."""
    return (struct.pack(">h", 0) + struct.pack(">i", 1) + _str(topic)
            + struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
            + _bytes(None))


class RawClient:
    """One blocking connection speaking request header v1 / response header v0."""

    def __init__(self, host, port, timeout=OP_TIMEOUT, client_id="compat-raw"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0
        self.client_id = client_id

    @classmethod
    def to(cls, bootstrap, **kw):
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), **kw)

    def close(self):
        self.sock.close()

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def send(self, api_key, version, body):
        self.corr += 1
        hdr = struct.pack(">hhi", api_key, version, self.corr) + _str(self.client_id)
        frame = hdr + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        return self.corr

    def receive(self, corr):
        n = struct.unpack(">i", self._recv(4))[0]
        data = self._recv(n)
        got = struct.unpack_from(">i", data)[0]
        assert got == corr, f"correlation id {got}, expected {corr}"
        return Reader(data[4:])

    def call(self, api_key, version, body):
        return self.receive(self.send(api_key, version, body))

    def produce(self, topic, partition, records, timeout_ms=int(OP_TIMEOUT * 1000)):
        """Produce v7, acks=-1, one partition's records: (error_code, base_offset)."""
        body = (_nstr(None) + struct.pack(">hi", -1, timeout_ms) + struct.pack(">i", 1)
                + _str(topic) + struct.pack(">i", 1) + struct.pack(">i", partition) + _bytes(records))
        r = self.call(0, 7, body)
        topics = r.array(lambda x: (x.str(), x.array(lambda y: (
            y.i32(), y.i16(), y.take(">q"), y.take(">q"), y.take(">q")))))
        (_, parts), = topics
        (_, err, base, _, _), = parts
        return err, base

    def init_producer_id(self):
        """InitProducerId v1 without transactional id: (producer id, epoch), retrying
        while the broker answers COORDINATOR_LOAD_IN_PROGRESS / _NOT_AVAILABLE /
        NOT_COORDINATOR."""
        deadline = time.monotonic() + 30
        while True:
            r = self.call(22, 1, _nstr(None) + struct.pack(">i", 60000))
            r.i32()
            err = r.i16()
            pid = r.take(">q")
            epoch = r.i16()
            if err not in (14, 15, 16) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert err == 0, f"InitProducerId: error {err}"
        return pid, epoch

    def call_flexible(self, api_key, version, body):
        """Request header v2 (tagged fields) / response header v1."""
        self.corr += 1
        frame = (struct.pack(">hhi", api_key, version, self.corr) + _str(self.client_id) + b"\x00"
                 + body)
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        r = self.receive(self.corr)
        _skip_tags(r)
        return r

    # --- group APIs ---------------------------------------------------------------

    def find_coordinator(self, group):
        r = self.call(10, 1, _str(group) + struct.pack(">b", 0))
        r.i32()
        return {"error": r.i16(), "message": r.str(), "node": r.i32(), "host": r.str(),
                "port": r.i32()}

    @staticmethod
    def join_body(group, member_id, protocol_type, protocols, instance_id=None,
                  session_ms=6000, rebalance_ms=10000):
        return (_str(group) + struct.pack(">ii", session_ms, rebalance_ms) + _str(member_id)
                + _nstr(instance_id) + _str(protocol_type) + struct.pack(">i", len(protocols))
                + b"".join(_str(n) + _bytes(m) for n, m in protocols))

    @staticmethod
    def parse_join(r):
        r.i32()
        out = {"error": r.i16(), "generation": r.i32(), "protocol": r.str(), "leader": r.str(),
               "member_id": r.str()}
        out["members"] = r.array(lambda x: (x.str(), x.str(), x.bytes()))
        return out

    def join(self, group, member_id, protocol_type="consumer", protocols=None, instance_id=None,
             session_ms=6000, rebalance_ms=10000):
        """JoinGroup v5 (blocks until the broker answers)."""
        protocols = protocols if protocols is not None else [("range", consumer_protocol_metadata(["t"]))]
        return self.parse_join(self.call(11, 5, self.join_body(
            group, member_id, protocol_type, protocols, instance_id, session_ms, rebalance_ms)))

    def join_new(self, group, **kw):
        """The KIP-394 two-step join of a new member; returns the second answer."""
        first = self.join(group, "", **kw)
        if first["error"] != MEMBER_ID_REQUIRED:
            return first
        assert first["member_id"], first
        return self.join(group, first["member_id"], **kw)

    def sync(self, group, generation, member_id, assignments=(), instance_id=None):
        """SyncGroup v3."""
        body = (_str(group) + struct.pack(">i", generation) + _str(member_id) + _nstr(instance_id)
                + struct.pack(">i", len(assignments))
                + b"".join(_str(m) + _bytes(a) for m, a in assignments))
        r = self.call(14, 3, body)
        r.i32()
        return {"error": r.i16(), "assignment": r.bytes()}

    def heartbeat(self, group, generation, member_id, instance_id=None):
        """Heartbeat v3."""
        r = self.call(12, 3, _str(group) + struct.pack(">i", generation) + _str(member_id)
                      + _nstr(instance_id))
        r.i32()
        return r.i16()

    def leave(self, group, members):
        """LeaveGroup v3: members = [(member_id, instance_id)]."""
        body = _str(group) + struct.pack(">i", len(members)) + b"".join(
            _str(m) + _nstr(i) for m, i in members)
        r = self.call(13, 3, body)
        r.i32()
        top = r.i16()
        return top, r.array(lambda x: (x.str(), x.str(), x.i16()))

    def describe_group(self, group):
        """DescribeGroups v3 (non-flexible; v3 has authorized operations)."""
        r = self.call(15, 3, struct.pack(">i", 1) + _str(group) + struct.pack(">b", 0))
        r.i32()
        groups = r.array(lambda x: {
            "error": x.i16(), "group_id": x.str(), "state": x.str(), "protocol_type": x.str(),
            "protocol": x.str(),
            "members": x.array(lambda y: {"member_id": y.str(), "client_id": y.str(),
                                          "host": y.str(), "metadata": y.bytes(),
                                          "assignment": y.bytes()}),
            "ops": x.i32()})
        return groups[0]


def coordinator(bootstrap, group, timeout=15.0):
    """FindCoordinator (retried while COORDINATOR_NOT_AVAILABLE, as clients do: right
    after start-up the offsets topic may not exist yet); a RawClient connected to it."""
    deadline = time.monotonic() + timeout
    while True:
        raw = RawClient.to(bootstrap)
        try:
            fc = raw.find_coordinator(group)
        finally:
            raw.close()
        if fc["error"] == 0:
            raw = RawClient(fc["host"], fc["port"])
            # The coordinator may still be loading the group's offsets partition.
            top = offset_fetch(raw, group, "_probe", [0])[1]
            if top == 0:
                return raw
            raw.close()
            assert top in RETRIABLE_COORDINATOR_ERRORS and time.monotonic() < deadline, top
        else:
            assert fc["error"] in RETRIABLE_COORDINATOR_ERRORS and time.monotonic() < deadline, fc
        time.sleep(0.1)


def varint(n, bits=32):
    """Zigzag varint of a signed value of `bits` bits (record fields; `bits=64` for
    varlongs)."""
    return uvarint(((n << 1) ^ (n >> (bits - 1))) & ((1 << bits) - 1))


def uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def cstr(s):
    """Compact (nullable) string of the flexible versions."""
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def _read_uvarint(r):
    n = shift = 0
    while True:
        b = r.take(">B")
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n


def _read_cstr(r):
    n = _read_uvarint(r) - 1
    if n < 0:
        return None
    s = r.d[r.o:r.o + n].decode()
    r.o += n
    return s


def _skip_tags(r):
    for _ in range(_read_uvarint(r)):
        _read_uvarint(r)
        r.o += _read_uvarint(r)


def offset_commit(raw, group, generation, member_id, commits, instance_id=None, version=7):
    """OffsetCommit v7 (or v9, flexible). commits = [(topic, partition, offset, metadata)].
    Returns {(topic, partition): error_code}."""
    by_topic = {}
    for t, p, o, md in commits:
        by_topic.setdefault(t, []).append((p, o, md))
    if version == 7:
        body = (_str(group) + struct.pack(">i", generation) + _str(member_id) + _nstr(instance_id)
                + struct.pack(">i", len(by_topic)))
        for t, parts in by_topic.items():
            body += _str(t) + struct.pack(">i", len(parts))
            for p, o, md in parts:
                body += struct.pack(">iqi", p, o, -1) + _nstr(md)
        r = raw.call(8, 7, body)
        r.i32()
        res = r.array(lambda x: (x.str(), x.array(lambda y: (y.i32(), y.i16()))))
    else:
        assert version == 9
        body = (cstr(group) + struct.pack(">i", generation) + cstr(member_id) + cstr(instance_id)
                + uvarint(len(by_topic) + 1))
        for t, parts in by_topic.items():
            body += cstr(t) + uvarint(len(parts) + 1)
            for p, o, md in parts:
                body += struct.pack(">iqi", p, o, -1) + cstr(md) + b"\x00"
            body += b"\x00"
        body += b"\x00"
        r = raw.call_flexible(8, 9, body)
        r.i32()
        res = []
        for _ in range(_read_uvarint(r) - 1):
            name = _read_cstr(r)
            parts = []
            for _ in range(_read_uvarint(r) - 1):
                parts.append((r.i32(), r.i16()))
                _skip_tags(r)
            _skip_tags(r)
            res.append((name, parts))
    return {(t, p): e for t, parts in res for p, e in parts}


def offset_fetch(raw, group, topic, partitions):
    """OffsetFetch v5: {partition: (offset, metadata, error)}, top-level error."""
    body = (_str(group) + struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(partitions))
            + b"".join(struct.pack(">i", p) for p in partitions))
    r = raw.call(9, 5, body)
    r.i32()
    res = r.array(lambda x: (x.str(), x.array(lambda y: (
        y.i32(), y.take(">q"), y.i32(), y.str(), y.i16()))))
    top = r.i16()
    return {p: (o, md, e) for _, parts in res for p, o, _, md, e in parts}, top


# ---------------------------------------------------------------------------------------
# A TCP proxy that cuts connections.

class CuttingProxy:
    """Forwards 127.0.0.1:port to a broker. The first `cuts` connections that carry
    produce traffic are dropped (both sides closed) once `cut_after` bytes went in the
    chosen direction ("up": client->broker, "down": broker->client), so requests are
    lost half-sent or answered but unacknowledged."""

    def __init__(self, target_port, schedule):
        self.target_port = target_port
        self.schedule = list(schedule)   # [(direction, byte count)] consumed in order
        self.lock = threading.Lock()
        self.cuts_done = []
        self.connections = 0
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.stopping = False
        self.socks = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def set_port(self, port):
        self.target_port = port

    def _accept(self):
        while not self.stopping:
            try:
                client, _ = self.srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += 1
                self.socks += [client, upstream]
            conn = {"up": 0, "down": 0, "plan": None, "closed": False, "produce": False}
            for src, dst, d in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, d, conn, client, upstream),
                                 daemon=True).start()

    def _pump(self, src, dst, direction, conn, client, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if direction == "up" and not conn["produce"] and self._scan(conn, data):
                        conn["produce"] = True
                        if self.schedule:
                            conn["plan"] = self.schedule.pop(0)
                            conn["start"] = dict(up=conn["up"], down=conn["down"])
                    plan = conn["plan"]
                    cut_at = None
                    if plan is not None and plan[0] == direction:
                        limit = conn["start"][direction] + plan[1]
                        if conn[direction] + len(data) >= limit:
                            cut_at = max(0, limit - conn[direction])
                    conn[direction] += len(data)
                if cut_at is not None:
                    if cut_at:
                        dst.sendall(data[:cut_at])
                    with self.lock:
                        self.cuts_done.append((direction, plan[1]))
                    self._close(client, upstream, conn)
                    return
                dst.sendall(data)
        except OSError:
            pass
        self._close(client, upstream, conn)

    @staticmethod
    def _scan(conn, data):
        """Follows request frame boundaries; True once a Produce request (api key 0)
        starts in the client->broker stream."""
        found = False
        i = 0
        while i < len(data):
            left = conn.get("frame_left", 0)
            if left > 0:
                step = min(left, len(data) - i)
                conn["frame_left"] = left - step
                i += step
                continue
            hdr = conn.get("hdr", b"") + data[i:i + 6 - len(conn.get("hdr", b""))]
            i += len(hdr) - len(conn.get("hdr", b""))
            if len(hdr) < 6:
                conn["hdr"] = hdr
                break
            conn["hdr"] = b""
            size, key = struct.unpack(">ih", hdr)
            found = found or key == 0
            conn["frame_left"] = size - 2
        return found

    def _close(self, client, upstream, conn):
        with self.lock:
            if conn["closed"]:
                return
            conn["closed"] = True
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self):
        self.stopping = True
        self.srv.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


class ConfiguredBroker(SpateBroker):
    """SpateBroker with extra settings, passed as SPATE_* environment variables (spate
    reads every flag from one) to the process it starts."""

    def __init__(self, data_dir, port, env):
        super().__init__(data_dir, port)
        self.env = env

    def start(self, timeout=30.0):
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            super().start(timeout)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
