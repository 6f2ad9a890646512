"""A listener's TLS keystore replaced at runtime (issue 18, docs/security.md): kafka-configs.sh
--alter --add-config listener.name.ssl.ssl.keystore.location=... points the SSL listener at a
new certificate with the same subject; new TLS connections get it without a restart, clients
go on producing and consuming, setting the same path again reloads the file at once, a
certificate with another subject is refused with Kafka's message, the unprefixed config is
refused as Kafka 4.4 refuses it, and a restarted broker uses the dynamic file."""
import re
import ssl
import socket
import time
import uuid

import pytest

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import consume, produce
from test_broker_configs import admin, jar  # noqa: F401 (fixture)
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (fixture)
from test_security import Pki, _cert, _name, _pem

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with an SSL listener")

KEYSTORE = "listener.name.ssl.ssl.keystore.location"


def write_keystore(pki, path, cn):
    """A PEM keystore (certificate, then its key) for `cn`, signed by the test CA, with the
    broker certificate's names; written beside and renamed into place. Returns the DER."""
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = _cert(_name(CN=cn), key, pki.ca_name, pki.ca_key, sans=sans)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_pem(cert) + _pem(key))
    tmp.replace(path)
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    RUNS.mkdir(parents=True, exist_ok=True)
    pki = Pki(tmp_path_factory.mktemp("pki"))
    plain = free_port()
    while (tls := free_port()) == plain:
        pass
    conf = pki.d / "spate.toml"
    # A long reload interval: what changes the certificate here is the dynamic config.
    conf.write_text(f"""
listeners = "PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{tls}"

[ssl]
keystore_location = "{pki.broker_cert}"
key_location = "{pki.broker_key}"
truststore_location = "{pki.ca_file}"
client_auth = "none"
reload_interval_ms = 600000
""")
    broker = SpateBroker(RUNS / f"spate-dynssl-{uuid.uuid4().hex[:10]}", plain, ["--config", str(conf)],
                         listen_flag=False)
    broker.start()
    yield broker, pki, tls
    broker.stop()


def served(pki, port):
    """The DER certificate a new TLS connection to `port` is given."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def wait_served(pki, port, der, broker, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served(pki, port) == der:
            return
        time.sleep(0.1)
    pytest.fail("new connections do not get the new certificate:\n" + broker.log_tail(20))


def configs(libs, bootstrap, *args):
    return tool(libs, "ConfigCommand", "--bootstrap-server", bootstrap, "--entity-type", "brokers",
                "--entity-name", "0", *args)


def round_trip(pki, port, tag):
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca_file)}
    topic = f"dynssl-{tag}-{uuid.uuid4().hex[:6]}"
    sent = [{"key": f"k{i}".encode(), "value": f"{tag}-{i}".encode(), "headers": [("h", str(i).encode())]}
            for i in range(5)]
    reports = produce(f"127.0.0.1:{port}", topic, sent, conf=conf)
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, i) for i in range(5)]
    got = consume(f"127.0.0.1:{port}", topic, 0, 5, conf=conf)
    assert [(r["key"], r["value"], r["headers"]) for r in got] == \
        [(r["key"], r["value"], r["headers"]) for r in sent]


def test_keystore_replaced_without_restart(tls_broker, kafka_libs, jar):
    broker, pki, port = tls_broker
    old = served(pki, port)
    pid = broker.proc.pid
    # Kafka 4.4 takes it with a listener prefix only.
    assert admin(broker.bootstrap, "alter-broker", "0", "SET", "ssl.keystore.location", "/x.pem") == {
        "error": "InvalidRequestException: These security configs can be dynamically updated only "
                 "per-listener using the listener prefix: [ssl.keystore.location]"}
    assert admin(broker.bootstrap, "alter-broker", "", "SET", KEYSTORE, "/x.pem") == {
        "error": "InvalidRequestException: Cannot update these configs at default cluster level, "
                 f"broker id must be specified: [{KEYSTORE}]"}

    keystore = pki.d / "renewed.pem"
    new = write_keystore(pki, keystore, "spate-broker-1")
    # An open connection keeps its certificate; new ones get the new one.
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as before:
            configs(kafka_libs, broker.bootstrap, "--alter", "--add-config", f"{KEYSTORE}={keystore}")
            wait_served(pki, port, new, broker)
            assert before.getpeercert(binary_form=True) == old
    assert broker.proc.pid == pid and broker.proc.poll() is None
    round_trip(pki, port, "renewed")

    # Described as Kafka describes a listener override: its value, then the file's.
    out = configs(kafka_libs, broker.bootstrap, "--describe")
    assert f"{KEYSTORE}={keystore} sensitive=false synonyms={{DYNAMIC_BROKER_CONFIG:{KEYSTORE}={keystore}, " \
           f"STATIC_BROKER_CONFIG:ssl.keystore.location={pki.broker_cert}}}" in out, out
    described = admin(broker.bootstrap, "broker-configs", "0")["configs"]
    entry = described[KEYSTORE]
    assert (entry["value"], entry["source"], entry["read_only"]) == \
        (str(keystore), "DYNAMIC_BROKER_CONFIG", True), entry
    base = described["ssl.keystore.location"]
    assert (base["value"], base["source"], base["read_only"]) == \
        (str(pki.broker_cert), "STATIC_BROKER_CONFIG", False), base

    # The file rewritten in place and set again: reloaded at once (the reload interval is
    # ten minutes), as operators rotate certificates with Kafka.
    rotated = write_keystore(pki, keystore, "spate-broker-1")
    configs(kafka_libs, broker.bootstrap, "--alter", "--add-config", f"{KEYSTORE}={keystore}")
    wait_served(pki, port, rotated, broker, timeout=5)
    round_trip(pki, port, "rotated")

    # Another subject: refused with Kafka's message, and the certificate stays.
    intruder = pki.d / "intruder.pem"
    write_keystore(pki, intruder, "intruder")
    got = admin(broker.bootstrap, "alter-broker", "0", "SET", KEYSTORE, str(intruder))
    assert got == {"error": "InvalidRequestException: Invalid value org.apache.kafka.common.config."
                   "ConfigException: Validation of dynamic config update of SSLFactory failed: "
                   "org.apache.kafka.common.config.ConfigException: Keystore DistinguishedName does not "
                   "match:  existing={alias=kafka, DN=CN=spate-broker-1}, new={alias=kafka, DN=CN=intruder} "
                   "for configuration Invalid dynamic configuration"}, got
    missing = pki.d / "missing.pem"
    got = admin(broker.bootstrap, "alter-broker", "0", "SET", KEYSTORE, str(missing))
    assert got["error"].endswith("InvalidConfigurationException: Failed to load PEM SSL keystore "
                                 f"{missing} for configuration Invalid dynamic configuration"), got
    assert served(pki, port) == rotated
    assert re.search(rf"{re.escape(KEYSTORE)}={re.escape(str(keystore))} ",
                     configs(kafka_libs, broker.bootstrap, "--describe"))

    # A restarted broker uses the dynamic keystore.
    broker.stop()
    broker.start()
    assert served(pki, port) == rotated
    round_trip(pki, port, "restarted")

    # Deleted: back to the file's keystore.
    configs(kafka_libs, broker.bootstrap, "--alter", "--delete-config", KEYSTORE)
    wait_served(pki, port, old, broker)
