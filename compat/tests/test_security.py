"""Listeners, TLS and SASL/PLAIN through real clients (issue 16, docs/security.md).

A private broker listens on four listeners at once: PLAINTEXT, SSL (client
certificates required), SASL_PLAINTEXT and SASL_SSL, with certificates the tests make
(a CA, the broker's, a client's) with the `cryptography` package. librdkafka
(confluent-kafka) and the Java client produce and consume over each secured listener;
the refusals (wrong password, plaintext client on the TLS port, no client certificate,
requests before authentication, an unknown mechanism) and the certificate reload are
checked too.
"""
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import JAVA_JAR, consume, java_jar, kafka_python_round_trip, produce, run_json
from test_franzgo import expected_produce, franzgo, strip  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with TLS and SASL")

USERS = {"alice": "alice-secret", "bob": "bob-secret"}
CLIENT_DN = "CN=compat-client,O=Spate Compat"
JVM = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m", "-jar", str(JAVA_JAR)]


# ---- certificates -------------------------------------------------------------------

def _pem(obj):
    from cryptography.hazmat.primitives import serialization
    if hasattr(obj, "public_bytes"):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject, key, issuer, issuer_key, ca=False, sans=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _name(**attrs):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


class Pki:
    """A CA with the broker's and a client's certificates, as PEM files in `d`."""

    def __init__(self, d):
        from cryptography.hazmat.primitives.asymmetric import ec
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = _name(CN="Spate Compat CA")
        self.ca = _cert(self.ca_name, self.ca_key, self.ca_name, self.ca_key, ca=True)
        self.ca_file = d / "ca.pem"
        self.ca_file.write_bytes(_pem(self.ca))
        self.broker_cert, self.broker_key = d / "broker.pem", d / "broker.key"
        self.issue_broker("spate-broker-1")
        ckey = ec.generate_private_key(ec.SECP256R1())
        # Issuer-style order (O, then CN): RFC 2253 writes it last RDN first.
        cert = _cert(_name(O="Spate Compat", CN="compat-client"), ckey, self.ca_name, self.ca_key)
        self.client_cert, self.client_key = d / "client.pem", d / "client.key"
        self.client_cert.write_bytes(_pem(cert))
        self.client_key.write_bytes(_pem(ckey))
        # The Java client's PEM keystore: certificate and unencrypted PKCS#8 key.
        self.client_keystore = d / "client-keystore.pem"
        self.client_keystore.write_bytes(_pem(cert) + _pem(ckey))

    def issue_broker(self, cn):
        """(Re)write the broker's certificate and key, for common name `cn`. The key is
        written first into a temporary file and both are renamed into place."""
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        cert = _cert(_name(CN=cn), key, self.ca_name, self.ca_key, sans=sans)
        for path, data in ((self.broker_key, _pem(key)), (self.broker_cert, _pem(cert))):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)


# ---- the broker ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    RUNS.mkdir(parents=True, exist_ok=True)
    pki = Pki(tmp_path_factory.mktemp("pki"))
    ports = {}
    for name in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        # free_port can hand out a port twice (it is free again once probed).
        while (port := free_port()) in ports.values():
            pass
        ports[name] = port
    listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items())
    users = "\n".join(f'{u} = "{pw}"' for u, pw in USERS.items())
    conf = pki.d / "spate.toml"
    conf.write_text(f"""
listeners = "{listeners}"

[ssl]
keystore_location = "{pki.broker_cert}"
key_location = "{pki.broker_key}"
truststore_location = "{pki.ca_file}"
client_auth = "required"
reload_interval_ms = 200

[sasl]
enabled_mechanisms = ["PLAIN"]

[sasl.plain.users]
{users}
""")
    data = RUNS / f"spate-sec-{uuid.uuid4().hex[:10]}"
    broker = SpateBroker(data, ports["PLAINTEXT"], ["--config", str(conf)], listen_flag=False)
    # The principal of a TLS connection is logged at debug.
    mp = pytest.MonkeyPatch()
    mp.setenv("SPATE_LOG", "info,spate::conn=debug")
    broker.start()
    mp.undo()
    yield broker, pki, ports
    broker.stop()


def addr(ports, name):
    return f"127.0.0.1:{ports[name]}"


def client_conf(pki, protocol, user="alice", password=None, cert=True):
    c = {"security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        c["ssl.ca.location"] = str(pki.ca_file)
        if cert and protocol == "SSL":
            c["ssl.certificate.location"] = str(pki.client_cert)
            c["ssl.key.location"] = str(pki.client_key)
    if protocol.startswith("SASL"):
        c.update({"sasl.mechanisms": "PLAIN", "sasl.username": user,
                  "sasl.password": USERS.get(user, "") if password is None else password})
    return c


def records(tag, n=20):
    return [{"key": f"k{i}".encode(), "value": f"{tag}-{i}".encode(),
             "headers": [("h", str(i).encode())]} for i in range(n)]


# ---- librdkafka ---------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_librdkafka_produce_consume(secure, protocol):
    broker, pki, ports = secure
    bootstrap, conf = addr(ports, protocol), client_conf(pki, protocol)
    topic = f"sec-rdk-{protocol.lower()}-{uuid.uuid4().hex[:6]}"
    sent = records(protocol)
    reports = produce(bootstrap, topic, sent, conf=conf)
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, i) for i in range(len(sent))]
    got = consume(bootstrap, topic, 0, len(sent), conf=conf)
    assert [(r["key"], r["value"], r["headers"]) for r in got] == \
        [(r["key"], r["value"], r["headers"]) for r in sent]


def test_metadata_answers_with_the_clients_listener(secure):
    """Each client is told the address of the listener it connected on."""
    broker, pki, ports = secure
    for protocol in ports:
        a = AdminClient({"bootstrap.servers": addr(ports, protocol),
                         **client_conf(pki, protocol)})
        md = a.list_topics(timeout=15)
        assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", ports[protocol])]


def test_mtls_principal_is_the_certificate_subject(secure):
    broker, pki, ports = secure
    a = AdminClient({"bootstrap.servers": addr(ports, "SSL"), **client_conf(pki, "SSL")})
    a.list_topics(timeout=15)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if f"principal=User:{CLIENT_DN}" in broker.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    pytest.fail("no TLS connection logged with the client certificate's principal:\n"
                + broker.log_tail(20))


def _refused(conf, seconds=6):
    """Errors a librdkafka admin client reports when its connection is refused."""
    errors = []
    a = AdminClient({**conf, "error_cb": lambda e: errors.append(e),
                     "reconnect.backoff.ms": 1000, "reconnect.backoff.max.ms": 1000})
    with pytest.raises(KafkaException):
        a.list_topics(timeout=seconds)
    # error_cb is served by poll.
    deadline = time.monotonic() + 3
    while not errors and time.monotonic() < deadline:
        a.poll(0.2)
    return errors


def test_wrong_password_is_refused(secure):
    broker, pki, ports = secure
    for protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        errors = _refused({"bootstrap.servers": addr(ports, protocol),
                           **client_conf(pki, protocol, password="nope")})
        text = " | ".join(str(e) for e in errors)
        assert "Authentication failed: Invalid username or password" in text, text
        errors = _refused({"bootstrap.servers": addr(ports, protocol),
                           **client_conf(pki, protocol, user="mallory", password="x")})
        assert any("Invalid username or password" in str(e) for e in errors), errors


def test_plaintext_client_on_tls_port_fails_cleanly(secure):
    broker, pki, ports = secure
    _refused({"bootstrap.servers": addr(ports, "SSL"), "security.protocol": "PLAINTEXT"})
    # The broker is unharmed.
    AdminClient({"bootstrap.servers": addr(ports, "PLAINTEXT")}).list_topics(timeout=15)
    assert broker.proc.poll() is None


def test_mtls_required_refuses_a_client_without_certificate(secure):
    broker, pki, ports = secure
    _refused({"bootstrap.servers": addr(ports, "SSL"), **client_conf(pki, "SSL", cert=False)})
    # Python's ssl: the handshake fails (the broker refuses a missing certificate).
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with socket.create_connection(("127.0.0.1", ports["SSL"]), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # TLS 1.3: the refusal arrives with the first read.
                tls.sendall(api_versions_frame())
                if not tls.recv(4):
                    raise ConnectionResetError("closed")


# ---- kafka-python, kcat and franz-go over mTLS ---------------------------------------

def test_kafka_python_mtls(secure):
    broker, pki, ports = secure
    common = {"bootstrap_servers": addr(ports, "SSL"), "security_protocol": "SSL",
              "ssl_cafile": str(pki.ca_file), "ssl_certfile": str(pki.client_cert),
              "ssl_keyfile": str(pki.client_key), "ssl_check_hostname": True}
    kafka_python_round_trip(common, f"sec-kpy-mtls-{uuid.uuid4().hex[:6]}")


def test_kcat_mtls(secure):
    broker, pki, ports = secure
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed")
    topic = f"sec-kcat-mtls-{uuid.uuid4().hex[:6]}"
    opts = ["-b", addr(ports, "SSL"), "-X", "security.protocol=SSL",
            "-X", f"ssl.ca.location={pki.ca_file}",
            "-X", f"ssl.certificate.location={pki.client_cert}",
            "-X", f"ssl.key.location={pki.client_key}"]
    subprocess.run(["kcat", *opts, "-P", "-t", topic, "-p", "0"], input=b"one\ntwo\n",
                   capture_output=True, check=True, timeout=60)
    out = subprocess.run(["kcat", *opts, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                          "-J"], capture_output=True, check=True, timeout=60)
    assert [json.loads(line)["payload"] for line in out.stdout.decode().splitlines()] == \
        ["one", "two"]


def test_franzgo_mtls(secure, franzgo):  # noqa: F811
    broker, pki, ports = secure
    env = {"FRANZGO_TLS_CA": str(pki.ca_file), "FRANZGO_TLS_CERT": str(pki.client_cert),
           "FRANZGO_TLS_KEY": str(pki.client_key)}
    topic = f"sec-franz-mtls-{uuid.uuid4().hex[:6]}"
    res = run_json([franzgo, addr(ports, "SSL"), "produce", topic, "zstd", "all", "1", "2", "60"],
                   env=env)
    assert all(p["error"] is None for p in res["produced"])
    assert strip(res["records"]) == expected_produce("zstd", 2, 60)
    # Without its certificate franz-go is refused in the handshake.
    del env["FRANZGO_TLS_CERT"], env["FRANZGO_TLS_KEY"]
    with pytest.raises(AssertionError):
        run_json([franzgo, addr(ports, "SSL"), "produce", f"{topic}-denied", "none", "all", "0",
                  "1", "1"], env=env, timeout=90)


# ---- KIP-43 rules, on the wire ------------------------------------------------------

def api_versions_frame(correlation=1):
    body = struct.pack(">hhih", 18, 0, correlation, -1)
    return struct.pack(">i", len(body)) + body


def sasl_handshake_frame(mechanism, version=1, correlation=7):
    m = mechanism.encode()
    body = struct.pack(">hhih", 17, version, correlation, -1) + struct.pack(">h", len(m)) + m
    return struct.pack(">i", len(body)) + body


def read_frame(sock):
    def exact(n):
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise EOFError("connection closed")
            out += chunk
        return out
    (size,) = struct.unpack(">i", exact(4))
    return exact(size)


def closed(sock):
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_requests_before_authentication_close_the_connection(secure):
    broker, pki, ports = secure
    metadata = struct.pack(">hhih", 3, 1, 3, -1) + struct.pack(">i", 0)
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=5) as s:
        # ApiVersions is served before authentication ...
        s.sendall(api_versions_frame())
        assert struct.unpack(">ih", read_frame(s)[:6]) == (1, 0)
        # ... Metadata is not: the connection closes, as Kafka closes it.
        s.sendall(struct.pack(">i", len(metadata)) + metadata)
        assert closed(s)


def test_unsupported_mechanism_lists_the_enabled_ones(secure):
    broker, pki, ports = secure
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=5) as s:
        s.sendall(sasl_handshake_frame("SCRAM-SHA-512"))
        resp = read_frame(s)
        correlation, error, count = struct.unpack(">ihi", resp[:10])
        (n,) = struct.unpack(">h", resp[10:12])
        assert (correlation, error, count, resp[12:12 + n]) == (7, 33, 1, b"PLAIN")
        assert closed(s)


def test_sasl_handshake_v0_with_a_bare_token(secure):
    """KIP-43's first form: after SaslHandshake v0 the PLAIN token goes bare."""
    broker, pki, ports = secure
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=5) as s:
        s.sendall(sasl_handshake_frame("PLAIN", version=0))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (7, 0)
        token = b"\0alice\0alice-secret"
        s.sendall(struct.pack(">i", len(token)) + token)
        assert read_frame(s) == b""
        # Authenticated: ApiVersions and everything else are served now.
        s.sendall(api_versions_frame(9))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (9, 0)


def test_sasl_on_a_plaintext_listener_is_an_illegal_state(secure):
    broker, pki, ports = secure
    with socket.create_connection(("127.0.0.1", ports["PLAINTEXT"]), timeout=5) as s:
        s.sendall(sasl_handshake_frame("PLAIN"))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (7, 34)


# ---- Java ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_java_produce_consume(secure, protocol, tmp_path, monkeypatch):
    broker, pki, ports = secure
    java_jar()
    props = [f"security.protocol={protocol}"]
    if protocol in ("SSL", "SASL_SSL"):
        props += ["ssl.truststore.type=PEM", f"ssl.truststore.location={pki.ca_file}"]
    if protocol == "SSL":
        props += ["ssl.keystore.type=PEM", f"ssl.keystore.location={pki.client_keystore}"]
    if protocol.startswith("SASL"):
        props += ["sasl.mechanism=PLAIN",
                  "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
                  'required username="bob" password="bob-secret";']
    f = tmp_path / "client.properties"
    f.write_text("\n".join(props) + "\n")
    monkeypatch.setenv("SPATE_COMPAT_CLIENT_PROPERTIES", str(f))
    topic = f"sec-java-{protocol.lower()}-{uuid.uuid4().hex[:6]}"
    res = run_json([*JVM, addr(ports, protocol), "produce", topic, "none", "all", "false", "1", "30"])
    assert [p["error"] for p in res["produced"]] == [None] * 30
    assert [p["offset"] for p in res["produced"]] == list(range(30))
    assert [(r["offset"], r["value"]) for r in res["records"]] == \
        [(i, None if i % 13 == 6 else f"java-none-{i}") for i in range(30)]


def test_java_wrong_password(secure, tmp_path, monkeypatch):
    broker, pki, ports = secure
    java_jar()
    f = tmp_path / "client.properties"
    f.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                 "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
                 'required username="bob" password="wrong";\n')
    monkeypatch.setenv("SPATE_COMPAT_CLIENT_PROPERTIES", str(f))
    with pytest.raises(AssertionError) as failed:
        run_json([*JVM, addr(ports, "SASL_PLAINTEXT"), "produce", "sec-java-denied", "none",
                  "all", "false", "1", "1"], timeout=90)
    assert "Authentication failed: Invalid username or password" in str(failed.value)


# ---- certificate reload -------------------------------------------------------------

def peer_common_name(pki, port):
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]


def test_certificate_reload_without_restart(secure):
    broker, pki, ports = secure
    assert peer_common_name(pki, ports["SSL"]) == "spate-broker-1"
    pid = broker.proc.pid
    pki.issue_broker("spate-broker-2")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if peer_common_name(pki, ports["SSL"]) == "spate-broker-2":
            break
        time.sleep(0.2)
    else:
        pytest.fail("new connections still get the old certificate:\n" + broker.log_tail(20))
    assert broker.proc.pid == pid and broker.proc.poll() is None
    # Clients go on working with the new certificate.
    topic = f"sec-reload-{uuid.uuid4().hex[:6]}"
    conf = client_conf(pki, "SASL_SSL")
    reports = produce(addr(ports, "SASL_SSL"), topic, records("reload", 3), conf=conf)
    assert [e for e, *_ in reports] == [None] * 3
