"""SCRAM-SHA-256 and SCRAM-SHA-512 (issue 16, part 2; docs/security.md).

A private broker with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners and the three
mechanisms enabled. Users are created with Kafka's own kafka-configs.sh
(ConfigCommand, AlterUserScramCredentials: the client salts and hashes the password);
librdkafka (confluent-kafka), the Java client, kafka-python and kcat then authenticate
with them. Refusals (wrong password, unknown user) carry Kafka's messages, and the
credentials, which live in the metadata log, survive a restart.
"""
import json
import re
import shutil
import subprocess
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import consume, java_jar, kafka_python_round_trip, produce, run_json
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (a fixture)
from test_franzgo import expected_produce, franzgo, strip  # noqa: F401 (a fixture)
from test_security import JVM, Pki, _refused

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with SASL")

# user: (mechanism, password, iterations or None for the tool's default, 4096)
USERS = {
    "alice": ("SCRAM-SHA-512", "alice-secret", None),
    "bob": ("SCRAM-SHA-256", "bob-secret", 8192),
}
FAILED = ("Authentication failed during authentication due to invalid credentials "
          "with SASL mechanism {}")


def configs(libs, bootstrap, *args):
    return tool(libs, "ConfigCommand", "--bootstrap-server", bootstrap, *args)


def add_user(libs, bootstrap, user, mechanism, password, iterations):
    spec = f"password={password}" if iterations is None else \
        f"iterations={iterations},password={password}"
    configs(libs, bootstrap, "--alter", "--add-config", f"{mechanism}=[{spec}]",
            "--entity-type", "users", "--entity-name", user)


@pytest.fixture(scope="module")
def scram(tmp_path_factory, kafka_libs):  # noqa: F811
    RUNS.mkdir(parents=True, exist_ok=True)
    pki = Pki(tmp_path_factory.mktemp("pki"))
    ports = {}
    for name in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"):
        while (port := free_port()) in ports.values():
            pass
        ports[name] = port
    listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items())
    conf = pki.d / "spate.toml"
    conf.write_text(f"""
listeners = "{listeners}"

[ssl]
keystore_location = "{pki.broker_cert}"
key_location = "{pki.broker_key}"
client_auth = "none"

[sasl]
enabled_mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
""")
    broker = SpateBroker(RUNS / f"spate-scram-{uuid.uuid4().hex[:10]}", ports["PLAINTEXT"],
                         ["--config", str(conf)], listen_flag=False)
    broker.start()
    plaintext = f"127.0.0.1:{ports['PLAINTEXT']}"
    for user, (mechanism, password, iterations) in USERS.items():
        add_user(kafka_libs, plaintext, user, mechanism, password, iterations)
    yield broker, pki, ports
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def addr(ports, name):
    return f"127.0.0.1:{ports[name]}"


def client_conf(pki, protocol, user="alice", password=None, mechanism=None):
    m, pw, _ = USERS.get(user, ("SCRAM-SHA-512", "", None))
    c = {"security.protocol": protocol, "sasl.mechanisms": mechanism or m,
         "sasl.username": user, "sasl.password": pw if password is None else password}
    if protocol == "SASL_SSL":
        c["ssl.ca.location"] = str(pki.ca_file)
    return c


def records(tag, n=10):
    return [{"key": f"k{i}".encode(), "value": f"{tag}-{i}".encode()} for i in range(n)]


def produce_consume(bootstrap, conf, tag):
    topic = f"scram-{tag}-{uuid.uuid4().hex[:6]}"
    sent = records(tag)
    reports = produce(bootstrap, topic, sent, conf=conf)
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, i) for i in range(len(sent))]
    got = consume(bootstrap, topic, 0, len(sent), conf=conf)
    assert [(r["key"], r["value"]) for r in got] == [(r["key"], r["value"]) for r in sent]


# ---- kafka-configs.sh ---------------------------------------------------------------

def test_kafka_configs_describes_users(scram, kafka_libs):  # noqa: F811
    broker, pki, ports = scram
    out = configs(kafka_libs, addr(ports, "PLAINTEXT"), "--describe", "--entity-type", "users")
    assert "SCRAM credential configs for user-principal 'alice' are SCRAM-SHA-512=iterations=4096" in out, out
    assert "SCRAM credential configs for user-principal 'bob' are SCRAM-SHA-256=iterations=8192" in out, out
    one = configs(kafka_libs, addr(ports, "PLAINTEXT"), "--describe", "--entity-type", "users",
                  "--entity-name", "bob")
    assert "'bob' are SCRAM-SHA-256=iterations=8192" in one and "alice" not in one, one


def test_kafka_configs_adds_and_deletes_a_credential(scram, kafka_libs):  # noqa: F811
    broker, pki, ports = scram
    b = addr(ports, "PLAINTEXT")
    add_user(kafka_libs, b, "carol", "SCRAM-SHA-256", "carol-secret", 4096)
    conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": "carol", "sasl.password": "carol-secret"}
    AdminClient({"bootstrap.servers": addr(ports, "SASL_PLAINTEXT"), **conf}).list_topics(timeout=15)
    configs(kafka_libs, b, "--alter", "--delete-config", "SCRAM-SHA-256",
            "--entity-type", "users", "--entity-name", "carol")
    out = configs(kafka_libs, b, "--describe", "--entity-type", "users", "--entity-name", "carol")
    # The admin client lists only users that have a credential.
    assert "carol" not in out, out
    errors = _refused({"bootstrap.servers": addr(ports, "SASL_PLAINTEXT"), **conf})
    assert any(FAILED.format("SCRAM-SHA-256") in str(e) for e in errors), errors
    # Deleting it again: RESOURCE_NOT_FOUND. (The tool itself refuses iterations out of
    # range; the broker's own checks are unit tests.)
    with pytest.raises(AssertionError, match="ResourceNotFoundException"):
        configs(kafka_libs, b, "--alter", "--delete-config", "SCRAM-SHA-256",
                "--entity-type", "users", "--entity-name", "carol")


# ---- librdkafka ---------------------------------------------------------------------

@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_librdkafka_produce_consume(scram, protocol, user):
    broker, pki, ports = scram
    produce_consume(addr(ports, protocol), client_conf(pki, protocol, user), f"rdk-{user}")


def test_wrong_password_and_unknown_user(scram):
    broker, pki, ports = scram
    for protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        errors = _refused({"bootstrap.servers": addr(ports, protocol),
                           **client_conf(pki, protocol, password="nope")})
        text = " | ".join(str(e) for e in errors)
        assert FAILED.format("SCRAM-SHA-512") in text, text
        # The message does not tell an unknown user from a wrong password.
        errors = _refused({"bootstrap.servers": addr(ports, protocol),
                           **client_conf(pki, protocol, user="mallory", password="x")})
        assert any(FAILED.format("SCRAM-SHA-512") in str(e) for e in errors), errors
    # A credential for SHA-512 does not log in with SHA-256.
    errors = _refused({"bootstrap.servers": addr(ports, "SASL_PLAINTEXT"),
                       **client_conf(pki, "SASL_PLAINTEXT", mechanism="SCRAM-SHA-256")})
    assert any(FAILED.format("SCRAM-SHA-256") in str(e) for e in errors), errors


# ---- Java ---------------------------------------------------------------------------

def java_props(tmp_path, pki, protocol, user, password):
    mechanism = USERS[user][0]
    props = [f"security.protocol={protocol}", f"sasl.mechanism={mechanism}",
             "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
             f'required username="{user}" password="{password}";']
    if protocol == "SASL_SSL":
        props += ["ssl.truststore.type=PEM", f"ssl.truststore.location={pki.ca_file}"]
    f = tmp_path / "client.properties"
    f.write_text("\n".join(props) + "\n")
    return f


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_java_produce_consume_over_sasl_ssl(scram, user, tmp_path, monkeypatch):
    broker, pki, ports = scram
    java_jar()
    f = java_props(tmp_path, pki, "SASL_SSL", user, USERS[user][1])
    monkeypatch.setenv("SPATE_COMPAT_CLIENT_PROPERTIES", str(f))
    topic = f"scram-java-{user}-{uuid.uuid4().hex[:6]}"
    res = run_json([*JVM, addr(ports, "SASL_SSL"), "produce", topic, "none", "all", "false", "1", "20"])
    assert [p["error"] for p in res["produced"]] == [None] * 20
    assert [r["offset"] for r in res["records"]] == list(range(20))


def test_java_wrong_password(scram, tmp_path, monkeypatch):
    broker, pki, ports = scram
    java_jar()
    f = java_props(tmp_path, pki, "SASL_SSL", "alice", "wrong")
    monkeypatch.setenv("SPATE_COMPAT_CLIENT_PROPERTIES", str(f))
    with pytest.raises(AssertionError) as failed:
        run_json([*JVM, addr(ports, "SASL_SSL"), "produce", "scram-java-denied", "none",
                  "all", "false", "1", "1"], timeout=90)
    assert FAILED.format("SCRAM-SHA-512") in str(failed.value)


# ---- kafka-python and kcat ----------------------------------------------------------

@pytest.mark.parametrize("protocol,user", [("SASL_PLAINTEXT", "bob"), ("SASL_SSL", "alice")])
def test_kafka_python_scram(scram, protocol, user):
    broker, pki, ports = scram
    mechanism, password, _ = USERS[user]
    common = {"bootstrap_servers": addr(ports, protocol), "security_protocol": protocol,
              "sasl_mechanism": mechanism, "sasl_plain_username": user,
              "sasl_plain_password": password}
    if protocol == "SASL_SSL":
        common.update(ssl_cafile=str(pki.ca_file), ssl_check_hostname=True)
    topic = f"scram-kpy-{uuid.uuid4().hex[:6]}"
    kafka_python_round_trip(common, topic)


# ---- franz-go -----------------------------------------------------------------------

def test_franzgo_scram_sha_512_over_sasl_ssl(scram, franzgo):  # noqa: F811
    broker, pki, ports = scram
    env = {"FRANZGO_TLS_CA": str(pki.ca_file), "FRANZGO_SASL": "SCRAM-SHA-512:alice:alice-secret"}
    topic = f"scram-franz-{uuid.uuid4().hex[:6]}"
    res = run_json([franzgo, addr(ports, "SASL_SSL"), "produce", topic, "lz4", "all", "1", "2", "60"],
                   env=env)
    assert all(p["error"] is None for p in res["produced"])
    assert strip(res["records"]) == expected_produce("lz4", 2, 60)
    # A wrong password: franz-go gives up with Kafka's message.
    env["FRANZGO_SASL"] = "SCRAM-SHA-512:alice:nope"
    with pytest.raises(AssertionError) as failed:
        run_json([franzgo, addr(ports, "SASL_SSL"), "produce", f"{topic}-denied", "none", "all",
                  "0", "1", "1"], env=env, timeout=90)
    assert FAILED.format("SCRAM-SHA-512") in str(failed.value)


def kcat_librdkafka():
    """The librdkafka version kcat links, as a tuple."""
    out = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"librdkafka ([0-9.]+)", out)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def test_kcat_scram(scram):
    """librdkafka before 2.6.1 puts the client nonce twice into its final message
    (librdkafka#4895); Kafka 4 brokers check the nonce strictly (RFC 5802) and refuse
    it, and so does Spate. Debian's kcat links such a librdkafka."""
    broker, pki, ports = scram
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed")
    topic = f"scram-kcat-{uuid.uuid4().hex[:6]}"
    opts = ["-b", addr(ports, "SASL_SSL"), "-X", "security.protocol=SASL_SSL",
            "-X", f"ssl.ca.location={pki.ca_file}", "-X", "sasl.mechanisms=SCRAM-SHA-512",
            "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"]
    produced = subprocess.run(["kcat", *opts, "-P", "-t", topic, "-p", "0"], input=b"one\ntwo\n",
                              capture_output=True, timeout=60)
    if kcat_librdkafka() < (2, 6, 1):
        assert produced.returncode != 0
        assert FAILED.format("SCRAM-SHA-512") in produced.stderr.decode(), produced.stderr
        assert "Invalid client nonce" in broker.log_path.read_text(errors="replace")
        return
    assert produced.returncode == 0, produced.stderr
    out = subprocess.run(["kcat", *opts, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                          "-J"], capture_output=True, check=True, timeout=60)
    assert [json.loads(l)["payload"] for l in out.stdout.decode().splitlines()] == ["one", "two"]


# ---- restart ------------------------------------------------------------------------

def test_credentials_survive_a_restart(scram, kafka_libs):  # noqa: F811
    broker, pki, ports = scram
    assert broker.stop() == 0
    broker.start()
    produce_consume(addr(ports, "SASL_SSL"), client_conf(pki, "SASL_SSL", "alice"), "restart")
    out = configs(kafka_libs, addr(ports, "PLAINTEXT"), "--describe", "--entity-type", "users")
    assert "'alice' are SCRAM-SHA-512=iterations=4096" in out, out


# ---- kafka-delegation-tokens.sh -----------------------------------------------------

def test_delegation_tokens_are_disabled_over_sasl(scram, kafka_libs, tmp_path):  # noqa: F811
    """On an authenticated channel Kafka 4.4 without `delegation.token.secret.key` (checked
    on a SASL_PLAINTEXT/PLAIN reference broker) answers DELEGATION_TOKEN_AUTH_DISABLED,
    after its broker's renewer check (INVALID_PRINCIPAL_TYPE)."""
    broker, pki, ports = scram
    config = java_props(tmp_path, pki, "SASL_PLAINTEXT", "alice", USERS["alice"][1])
    disabled = ("org.apache.kafka.common.errors.DelegationTokenDisabledException: "
                "Delegation Token feature is not enabled.")
    invalid_renewer = ("org.apache.kafka.common.errors.InvalidPrincipalTypeException: "
                       "Supplied principalType is not supported.")
    for command, error in [
        (["--create", "--max-life-time-period", "-1", "--renewer-principal", "User:bob"], disabled),
        (["--create", "--max-life-time-period", "-1", "--owner-principal", "User:bob"], disabled),
        (["--create", "--max-life-time-period", "-1", "--renewer-principal", "Group:ops"],
         invalid_renewer),
        (["--describe"], disabled),
        (["--renew", "--hmac", "abcd", "--renew-time-period", "-1"], disabled),
        (["--expire", "--hmac", "abcd", "--expiry-time-period", "-1"], disabled),
    ]:
        r = subprocess.run(["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*",
                            "org.apache.kafka.tools.DelegationTokenCommand", "--bootstrap-server",
                            addr(ports, "SASL_PLAINTEXT"), "--command-config", str(config), *command],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 1, r.stdout + r.stderr
        assert error in r.stdout + r.stderr, command
