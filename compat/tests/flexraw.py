"""A raw client for flexible (KIP-482) request versions: request header v2, response
header v1, compact strings and arrays, tagged fields. Used where no client library
exposes a request's exact fields (DescribeTopicPartitions cursors, ListConfigResources)."""
import socket
import struct
import uuid

from grouputil import cstr, uvarint


def carray(items):
    """COMPACT_ARRAY of already encoded items."""
    return uvarint(len(items) + 1) + b"".join(items)


TAGS = uvarint(0)


class FlexReader:
    def __init__(self, data):
        self.d = data
        self.o = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)
        self.o += struct.calcsize(fmt)
        return v[0]

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def bool(self):
        return self.take(">?")

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.d[self.o]
            self.o += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def str(self):
        n = self.uvarint()
        if n == 0:
            return None
        s = self.d[self.o:self.o + n - 1].decode()
        self.o += n - 1
        return s

    def uuid(self):
        v = uuid.UUID(bytes=self.d[self.o:self.o + 16])
        self.o += 16
        return v

    def array(self, item):
        n = self.uvarint()
        if n == 0:
            return None
        return [item(self) for _ in range(n - 1)]

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.o += self.uvarint()

    def struct(self, read):
        """A nullable struct: -1 marker byte for null, else 1 and the fields."""
        if self.i8() < 0:
            return None
        return read(self)


class FlexClient:
    def __init__(self, bootstrap, timeout=30, client_id="flexpy"):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.corr = 0
        self.client_id = client_id.encode()

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

    def call(self, api_key, version, body):
        """Send one request; returns a reader positioned after the response header."""
        self.corr += 1
        hdr = struct.pack(">hhi", api_key, version, self.corr) + struct.pack(">h", len(self.client_id)) + self.client_id + TAGS
        frame = hdr + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        data = self._recv(struct.unpack(">i", self._recv(4))[0])
        r = FlexReader(data)
        assert r.i32() == self.corr
        r.tags()
        return r


def describe_topic_partitions(client, topics, limit=2000, cursor=None):
    """DescribeTopicPartitions v0: (topics, next cursor); each topic is a dict."""
    body = carray([cstr(t) + TAGS for t in topics]) + struct.pack(">i", limit)
    body += b"\xff" if cursor is None else b"\x01" + cstr(cursor[0]) + struct.pack(">i", cursor[1]) + TAGS
    r = client.call(75, 0, body + TAGS)
    r.i32()

    def partition(x):
        p = {"error": x.i16(), "index": x.i32(), "leader": x.i32(), "epoch": x.i32(),
             "replicas": x.array(lambda y: y.i32()), "isr": x.array(lambda y: y.i32()),
             "elr": x.array(lambda y: y.i32()), "last_known_elr": x.array(lambda y: y.i32()),
             "offline": x.array(lambda y: y.i32())}
        x.tags()
        return p

    def topic(x):
        t = {"error": x.i16(), "name": x.str(), "id": x.uuid(), "internal": x.bool(),
             "partitions": x.array(partition), "authorized_operations": x.i32()}
        x.tags()
        return t

    topics_out = r.array(topic)

    def cur(x):
        c = (x.str(), x.i32())
        x.tags()
        return c

    return topics_out, r.struct(cur)


def list_config_resources(client, version, types=()):
    """ListConfigResources: (error code, [(type, name)]) in the broker's order."""
    body = (carray([struct.pack(">b", t) for t in types]) if version >= 1 else b"") + TAGS
    r = client.call(74, version, body)
    r.i32()
    error = r.i16()

    def res(x):
        name = x.str()
        kind = x.i8() if version >= 1 else 16
        x.tags()
        return (kind, name)

    return error, r.array(res)


def nullable_carray(items):
    """COMPACT_ARRAY that is null when `items` is None."""
    return uvarint(0) if items is None else carray(items)


def consumer_group_heartbeat(client, group, member_id, epoch, topics=None, regex=None,
                             assignor=None, instance_id=None, rebalance_timeout_ms=-1,
                             owned=None, version=1):
    """ConsumerGroupHeartbeat (KIP-848) as a dict: error, message, member_id, epoch,
    interval and assignment ({topic id: sorted partitions} or None). `owned` is the
    member's owned partitions ({topic id (uuid.UUID): [partitions]}) or None."""
    body = cstr(group) + cstr(member_id) + struct.pack(">i", epoch)
    body += cstr(instance_id) + cstr(None) + struct.pack(">i", rebalance_timeout_ms)
    body += nullable_carray(None if topics is None else [cstr(t) for t in topics])
    if version >= 1:
        body += cstr(regex)
    body += cstr(assignor)
    tps = None if owned is None else [
        tid.bytes + carray([struct.pack(">i", p) for p in parts]) + TAGS
        for tid, parts in owned.items()]
    body += nullable_carray(tps) + TAGS
    r = client.call(68, version, body)
    r.i32()
    out = {"error": r.i16(), "message": r.str(), "member_id": r.str(), "epoch": r.i32(),
           "interval": r.i32()}

    def topic_partitions(x):
        tid = x.uuid()
        parts = x.array(lambda y: y.i32())
        x.tags()
        return tid, sorted(parts)

    def assignment(x):
        a = dict(x.array(topic_partitions))
        x.tags()
        return a

    out["assignment"] = r.struct(assignment)
    return out
