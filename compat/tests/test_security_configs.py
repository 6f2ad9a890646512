"""Kafka's ssl.* and sasl.* broker configs as Spate describes them (issue 18,
docs/configuration.md): kafka-configs.sh --describe --all, over SASL_SSL, against a
broker with TLS and SASL listeners prints the lines Kafka prints for the file's [ssl]
and [sasl] settings under their Kafka names; they are read-only."""
import re
import uuid

import pytest

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from test_broker_configs import admin, jar  # noqa: F401 (fixture)
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (fixture)
from test_security import Pki

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with TLS and SASL")


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    RUNS.mkdir(parents=True, exist_ok=True)
    pki = Pki(tmp_path_factory.mktemp("pki"))
    plain = free_port()
    while (sasl_ssl := free_port()) == plain:
        pass
    conf = pki.d / "spate.toml"
    conf.write_text(f"""
listeners = "PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl_ssl}"

[ssl]
keystore_location = "{pki.broker_cert}"
key_location = "{pki.broker_key}"
truststore_location = "{pki.ca_file}"
client_auth = "requested"
principal_mapping_rules = "RULE:^CN=(.*)$/$1/L,DEFAULT"

[sasl]
enabled_mechanisms = ["PLAIN", "SCRAM-SHA-512"]
inter_broker_mechanism = "SCRAM-SHA-512"

[sasl.plain.users]
alice = "alice-secret"

[sasl.oauthbearer]
expected_audience = ["spate", "kafka"]
expected_issuer = "https://idp.example.com"
""")
    broker = SpateBroker(RUNS / f"spate-seccfg-{uuid.uuid4().hex[:10]}", plain, ["--config", str(conf)],
                         listen_flag=False)
    broker.start()
    client = pki.d / "client.properties"
    client.write_text(f"""security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
username="alice" password="alice-secret";
ssl.truststore.type=PEM
ssl.truststore.location={pki.ca_file}
""")
    yield pki, f"127.0.0.1:{sasl_ssl}", client, broker.bootstrap
    broker.stop()


def test_kafka_configs_describes_ssl_and_sasl(secured, kafka_libs):
    pki, bootstrap, client, _ = secured
    out = tool(kafka_libs, "ConfigCommand", "--bootstrap-server", bootstrap, "--command-config", client,
               "--entity-type", "brokers", "--entity-name", "0", "--describe", "--all")
    got = [line.strip() for line in out.splitlines() if re.match(r"\s+(ssl|sasl)\.", line)]

    def static(name, value, default=None):
        synonyms = f"STATIC_BROKER_CONFIG:{name}={value}"
        if default is not None:
            synonyms += f", DEFAULT_CONFIG:{name}={default}"
        return f"{name}={value} sensitive=false synonyms={{{synonyms}}}"

    def default(name, value):
        return f"{name}={value} sensitive=false synonyms={{DEFAULT_CONFIG:{name}={value}}}"

    assert got == [
        static("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512", "PLAIN"),
        static("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512", "PLAIN"),
        default("sasl.oauthbearer.clock.skew.seconds", "30"),
        static("sasl.oauthbearer.expected.audience", "spate,kafka", ""),
        static("sasl.oauthbearer.expected.issuer", "https://idp.example.com"),
        default("sasl.oauthbearer.jwks.endpoint.refresh.ms", "30000"),
        "sasl.oauthbearer.jwks.endpoint.url=null sensitive=false synonyms={}",
        default("sasl.oauthbearer.scope.claim.name", "scope"),
        default("sasl.oauthbearer.sub.claim.name", "sub"),
        default("sasl.server.max.receive.size", "524288"),
        default("ssl.allow.dn.changes", "false"),
        default("ssl.allow.san.changes", "false"),
        default("ssl.cipher.suites", ""),
        static("ssl.client.auth", "requested", "none"),
        default("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
        default("ssl.endpoint.identification.algorithm", "https"),
        static("ssl.keystore.location", pki.broker_cert),
        default("ssl.keystore.type", "PEM"),
        static("ssl.principal.mapping.rules", "RULE:^CN=(.*)$/$1/L,DEFAULT", "DEFAULT"),
        default("ssl.protocol", "TLSv1.3"),
        static("ssl.truststore.location", pki.ca_file),
        default("ssl.truststore.type", "PEM"),
    ]


def test_ssl_and_sasl_configs_are_read_only(secured, jar):
    """Refused as Kafka refuses its read-only configs (Kafka 4.4 changes sasl.enabled.mechanisms
    per broker; Spate does not)."""
    plaintext = secured[3]
    for name, value in (("ssl.principal.mapping.rules", "DEFAULT"), ("sasl.enabled.mechanisms", "PLAIN")):
        assert admin(plaintext, "alter-broker", "0", "SET", name, value) == {
            "error": f"InvalidRequestException: Cannot update these configs dynamically: [{name}]"}, name
