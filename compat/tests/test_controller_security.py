"""A 3-node cluster (scripts/local-cluster.sh) whose controller channel is TLS with
mutual authentication (`controller_security_protocol = "SSL"`, docs/security.md,
"Controller traffic"), with the authorizer on: the quorum forms and brokers register
over it, a topic is created and records go round trip, and the controller ports turn
away a plaintext client, a TLS client without a certificate, one whose certificate
comes from another CA and one whose trusted certificate maps to a principal that is
not a super user and has no CLUSTER_ACTION; replaced certificate files are presented
to new connections without a restart. The Kafka listeners stay PLAINTEXT.

Certificates are made here with the `cryptography` package (as in test_security.py).
"""
import datetime
import ipaddress
import os
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import EXTERNAL, ROOT, RUNS, SPATE_BIN, free_port

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(bool(EXTERNAL), reason="starts its own cluster")]

SCRIPT = ROOT / "scripts" / "local-cluster.sh"
NODE_CN = "spate-node"


# ---- certificates -------------------------------------------------------------------

def _pem(obj):
    from cryptography.hazmat.primitives import serialization
    if hasattr(obj, "public_bytes"):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    def __init__(self, d, cn):
        from cryptography.hazmat.primitives.asymmetric import ec
        self.d, self.key, self.name = d, ec.generate_private_key(ec.SECP256R1()), _name(cn)
        self.cert = self._sign(self.name, self.key.public_key(), ca=True)
        self.file = d / f"{cn}.pem"
        self.file.write_bytes(_pem(self.cert))

    def _sign(self, subject, public_key, ca=False):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(self.key, hashes.SHA256())

    def issue(self, cn):
        """(certificate file, key file) for `cn`, valid for 127.0.0.1: (re)written key
        first, each renamed into place, as an operator replacing them should."""
        from cryptography.hazmat.primitives.asymmetric import ec
        key = ec.generate_private_key(ec.SECP256R1())
        cert, key_file = self.d / f"{cn}.crt", self.d / f"{cn}.key"
        for path, data in ((key_file, _pem(key)),
                           (cert, _pem(self._sign(_name(cn), key.public_key())))):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return cert, key_file


# ---- the cluster --------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    d = RUNS / f"ctls-{uuid.uuid4().hex[:8]}"
    pki = d / "pki"
    pki.mkdir(parents=True)
    ca = Ca(pki, "Spate Controller CA")
    cert, key = ca.issue(NODE_CN)
    config = d / "cluster.toml"
    # The Kafka listeners stay PLAINTEXT (User:ANONYMOUS, a super user here so that
    # clients and brokers' follower fetches need no ACLs); the controller channel's
    # principal is the nodes' certificate subject.
    config.write_text(f"""
broker_heartbeat_interval_ms = 300
broker_session_timeout_ms = 2000
offsets_topic_num_partitions = 3
transaction_state_num_partitions = 3
controller_security_protocol = "SSL"

[ssl]
keystore_location = "{cert}"
key_location = "{key}"
truststore_location = "{ca.file}"
principal_mapping_rules = "RULE:^CN=(.*)$/$1/,DEFAULT"
reload_interval_ms = 200

[authorizer]
enable = true
super_users = "User:ANONYMOUS;User:{NODE_CN}"
""")
    ports = [free_port() for _ in range(3)]
    cports = [free_port() for _ in range(3)]
    env = dict(os.environ, SPATE_BIN=str(SPATE_BIN), SPATE_CLUSTER_DIR=str(d),
               SPATE_CLUSTER_PORTS=",".join(map(str, ports)),
               SPATE_CLUSTER_CONTROLLER_PORTS=",".join(map(str, cports)),
               SPATE_CLUSTER_CONFIG=str(config))

    def run(*args):
        r = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                           timeout=150)
        logs = "\n".join((d / f"node-{n}.log").read_text(errors="replace")[-3000:]
                         for n in range(3) if (d / f"node-{n}.log").exists())
        assert r.returncode == 0, f"local-cluster.sh {args}: {r.stdout}\n{r.stderr}\n{logs}"

    run("start")
    yield {"dir": d, "ca": ca, "pki": pki, "ports": ports, "cports": cports,
           "cert": cert, "key": key}
    run("stop")


# ---- the controller channel, by hand ------------------------------------------------

# One request frame of the controller channel (replication/src/rpc.rs): a u32 length,
# then postcard's Envelope { to: 99, request: Request::Observe } (varint 99, variant 3).
# No controller has id 99, so an admitted peer is answered Response::WrongNode (variant
# 3) with the controller's id, before anything else happens.
WRONG_NODE_PROBE = struct.pack(">I", 2) + bytes([99, 3])
WRONG_NODE_ANSWER = struct.pack(">I", 2) + bytes([3])


def answered(got):
    """Whether a controller answered the probe (a refused peer gets nothing, or at most
    a TLS alert)."""
    return got.startswith(WRONG_NODE_ANSWER)


def tls_context(ca_file, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_file)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def probe(port, ctx=None, peer_cert=None):
    """Sends WRONG_NODE_PROBE to a controller port; up to 6 bytes of what comes back
    (b"" when the connection was closed or the handshake refused). The controller's
    certificate (DER) is appended to `peer_cert` when given."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
        if peer_cert is not None:
            peer_cert.append(s.getpeercert(binary_form=True))
        s.sendall(WRONG_NODE_PROBE)
        got = b""
        while len(got) < 6:
            chunk = s.recv(6 - len(got))
            if not chunk:
                break
            got += chunk
        return got
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        raw.close()


def test_the_cluster_forms_and_serves_over_a_tls_controller_channel(cluster):
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in cluster["ports"])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"ctls-{uuid.uuid4().hex[:8]}"
    # Created through whichever node the client picks: forwarded to the active
    # controller over the TLS channel unless it is that node.
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(30):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 3)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = set()
    deadline = time.monotonic() + 60
    while len(got) < 30 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.add(m.value())
    c.close()
    assert got == {b"v%d" % i for i in range(30)}
    # All three brokers registered with the active controller (over TLS).
    assert len(admin.list_topics(timeout=10).brokers) == 3


def test_controller_ports_admit_only_authenticated_authorized_peers(cluster):
    ca, pki, port = cluster["ca"], cluster["pki"], cluster["cports"][0]
    # The nodes' own identity (a super user) is admitted: controller 0 says who it is.
    admitted = probe(port, tls_context(ca.file, cluster["cert"], cluster["key"]))
    assert admitted == WRONG_NODE_ANSWER + bytes([0])
    # Plaintext: the bytes are not a TLS handshake; the connection closes unanswered.
    assert not answered(probe(port))
    # TLS without a client certificate.
    assert not answered(probe(port, tls_context(ca.file)))
    # A certificate from another CA (the client trusts the controller's CA).
    other = Ca(pki, "Other CA")
    cert, key = other.issue("spate-node-impostor")
    assert not answered(probe(port, tls_context(ca.file, cert, key)))
    # A certificate from the right CA whose principal (User:intruder) is neither a super
    # user nor has CLUSTER_ACTION: the handshake completes, the request is refused.
    cert, key = ca.issue("intruder")
    assert probe(port, tls_context(ca.file, cert, key)) == b""
    # The refusal is logged by the controller's connection task, which may run after the
    # client has already seen the connection close: wait (bounded) for the line.
    node_log = cluster["dir"] / "node-0.log"
    deadline = time.monotonic() + 10
    while ("User:intruder may not use the controller channel"
           not in node_log.read_text(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "User:intruder may not use the controller channel" in node_log.read_text(errors="replace")
    # The quorum is unharmed.
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster['ports'][0]}"})
    assert len(admin.list_topics(timeout=10).brokers) == 3


def test_replaced_certificates_are_presented_without_a_restart(cluster):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    ca, port = cluster["ca"], cluster["cports"][1]
    cert, key = ca.issue(NODE_CN)  # the files every node reads, rewritten
    new = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    deadline = time.monotonic() + 15
    while True:
        seen = []
        got = probe(port, tls_context(ca.file, cert, key), seen)
        if seen and seen[0] == new:
            break
        assert time.monotonic() < deadline, "the controller still presents the old certificate"
        time.sleep(0.2)
    # Controller 1 took the new certificate, and the new client certificate, from the
    # same files, is trusted and admitted.
    assert got == WRONG_NODE_ANSWER + bytes([1])
    # The nodes' own connections to each other use the new files too: the quorum
    # still takes changes.
    admin = AdminClient({"bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in cluster["ports"])})
    topic = f"ctls-reload-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(30)
