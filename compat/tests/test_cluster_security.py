"""Inter-broker traffic over SASL_SSL with SCRAM-SHA-512, and over SSL with client
certificates (issue 16; docs/security.md, "Inter-broker traffic").

A 3-node cluster on loopback whose brokers have two listeners, CLIENT (SASL_SSL) and
BROKER, with the authorizer on; brokers reach each other on BROKER
(`inter_broker_listener_name`), so follower fetches, transaction markers and KIP-890
verification all go through it. Each test runs against two such clusters:
* `scram`: BROKER is SASL_SSL and brokers authenticate as the SCRAM user `broker`, a
  super user. The credential lives in the metadata log, so the cluster starts without
  it, its followers are refused until it is created (which the test checks in the
  logs), and then catch up.
* `scram_bootstrapped`: the same, with the credential written into the new metadata log
  from `[[sasl.bootstrap_scram]]`: no follower is ever refused.
* `mtls`: BROKER is SSL with client certificates required, and a broker's principal is
  its certificate's subject, `User:CN=spate-broker-1`, a super user.
 librdkafka (confluent-kafka) produces with acks=all to a topic replicated
three times with min.insync.replicas=2, which completes only when followers fetch, and
runs a transaction over partitions led by different brokers.
"""
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import consume, produce
from test_security import Pki

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="starts a cluster of its own")

ADMIN, ADMIN_PASSWORD = "admin", "admin-secret"
BROKER, BROKER_PASSWORD = "broker", "broker-secret"
NODES = 3
REFUSED = "refused this broker's SASL authentication"


def ports(n):
    taken = set()
    out = []
    while len(out) < n:
        p = free_port()
        if p not in taken:
            taken.add(p)
            out.append(p)
    return out


# How brokers authenticate to each other: BROKER's protocol, and the settings that go
# with it.
MODES = {
    "scram": ("SASL_SSL", f"""
inter_broker_mechanism = "SCRAM-SHA-512"
inter_broker_username = "{BROKER}"
inter_broker_password = "{BROKER_PASSWORD}"
""", f"User:{BROKER}"),
    "mtls": ("SSL", "", "User:CN=spate-broker-1"),
    # The credential is in the metadata log from its first records
    # (`kafka-storage.sh format --add-scram`).
    "scram_bootstrapped": ("SASL_SSL", f"""
inter_broker_mechanism = "SCRAM-SHA-512"
inter_broker_username = "{BROKER}"
inter_broker_password = "{BROKER_PASSWORD}"

[[sasl.bootstrap_scram]]
mechanism = "SCRAM-SHA-512"
user = "{BROKER}"
password = "{BROKER_PASSWORD}"
""", f"User:{BROKER}"),
}


class SecureCluster:
    def __init__(self, tmp, mode):
        protocol, sasl, principal = MODES[mode]
        self.mode = mode
        self.pki = Pki(tmp / "pki")
        self.dir = RUNS / f"secure-cluster-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)
        all_ports = ports(3 * NODES)
        self.client_ports = all_ports[:NODES]
        self.broker_ports = all_ports[NODES:2 * NODES]
        controller_ports = all_ports[2 * NODES:]
        voters = ",".join(f"{n}@127.0.0.1:{p}" for n, p in enumerate(controller_ports))
        self.nodes = []
        for n in range(NODES):
            conf = self.dir / f"node-{n}.toml"
            conf.write_text(f"""
listeners = "CLIENT://127.0.0.1:{self.client_ports[n]},BROKER://127.0.0.1:{self.broker_ports[n]}"
listener_security_protocol_map = "CLIENT:SASL_SSL,BROKER:{protocol}"
inter_broker_listener_name = "BROKER"
broker_heartbeat_interval_ms = 300
broker_session_timeout_ms = 2000
offsets_topic_num_partitions = 3
transaction_state_num_partitions = 3

[ssl]
keystore_location = "{self.pki.broker_cert}"
key_location = "{self.pki.broker_key}"
truststore_location = "{self.pki.ca_file}"
client_auth = "required"

[sasl]
enabled_mechanisms = ["PLAIN", "SCRAM-SHA-512"]
{sasl}
[sasl.plain.users]
{ADMIN} = "{ADMIN_PASSWORD}"

[authorizer]
enable = true
super_users = "User:{ADMIN};{principal}"
""")
            self.nodes.append(SpateBroker(
                self.dir / f"node-{n}", self.client_ports[n],
                ["--config", str(conf), "--node-id", str(n),
                 "--controller-listen", f"127.0.0.1:{controller_ports[n]}",
                 "--controller-quorum-voters", voters],
                listen_flag=False))

    def start(self):
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(90)

    def stop(self):
        for node in self.nodes:
            node.stop()

    def logs(self):
        return "\n".join(n.log_path.read_text(errors="replace") for n in self.nodes)

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.client_ports)

    def conf(self, **extra):
        return {"security.protocol": "SASL_SSL", "ssl.ca.location": str(self.pki.ca_file),
                "sasl.mechanisms": "PLAIN", "sasl.username": ADMIN,
                "sasl.password": ADMIN_PASSWORD, **extra}

    def admin(self):
        return AdminClient({"bootstrap.servers": self.bootstrap, **self.conf()})


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def full_isr(admin, topic, partitions):
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return (md.error is None and len(md.partitions) == partitions
            and all(len(p.isrs) == NODES and p.leader >= 0 for p in md.partitions.values()))


@pytest.fixture(scope="module", params=sorted(MODES))
def secure_cluster(request, tmp_path_factory):
    c = SecureCluster(tmp_path_factory.mktemp("secure-cluster"), request.param)
    c.start()
    if c.mode != "scram":
        yield c
        c.stop()
        return
    try:
        # The followers of a topic made before the broker's SCRAM credential exists try
        # the BROKER listener and are refused.
        admin, early = c.admin(), "secure-early"
        admin.create_topics([NewTopic(early, 1, 3)])[early].result(30)
        wait_for("a follower refused for want of its SCRAM credential",
                 lambda: REFUSED in c.logs())
        upsert = UserScramCredentialUpsertion(
            BROKER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), BROKER_PASSWORD.encode())
        for f in admin.alter_user_scram_credentials([upsert]).values():
            f.result(30)
        yield c
    finally:
        c.stop()


def test_followers_replicate_over_sasl_ssl_and_acks_all_completes(secure_cluster):
    c = secure_cluster
    admin = c.admin()
    topic = f"secure-rf3-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    wait_for("every replica in sync", lambda: full_isr(admin, topic, 3))
    sent = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % 3}
            for i in range(90)]
    reports = produce(c.bootstrap, topic, sent, conf=c.conf(acks="all"))
    assert all(err is None for err, *_ in reports), reports[:3]
    for p in range(3):
        got = consume(c.bootstrap, topic, p, 30, conf=c.conf())
        assert [r["value"] for r in got] == [f"v{i}".encode() for i in range(p, 90, 3)]
    # The followers have every record too: the high watermark, which needs them, is
    # at the end of each partition.
    consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"g-{topic}", **c.conf()})
    try:
        for p in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert (low, high) == (0, 30)
    finally:
        consumer.close()
    if c.mode == "scram":
        # The topic made before the credential existed caught up too.
        wait_for("the early topic in sync", lambda: full_isr(admin, "secure-early", 1))
    if c.mode == "scram_bootstrapped":
        assert REFUSED not in c.logs()


def test_a_transaction_over_partitions_of_every_broker_commits(secure_cluster):
    c = secure_cluster
    admin = c.admin()
    topic = f"secure-txn-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
    wait_for("every replica in sync", lambda: full_isr(admin, topic, 3))
    leaders = {p.leader for p in admin.list_topics(topic, timeout=10).topics[topic].partitions.values()}
    assert len(leaders) > 1, "the partitions' leaders should be spread over the brokers"
    producer = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": f"t-{topic}",
                         **c.conf()})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(30):
        producer.produce(topic, value=f"t{i}".encode(), partition=i % 3)
    producer.commit_transaction(30)
    for p in range(3):
        got = consume(c.bootstrap, topic, p, 10, conf=c.conf(**{"isolation.level": "read_committed"}))
        assert [r["value"] for r in got] == [f"t{i}".encode() for i in range(p, 30, 3)]
    # Each partition ends with its commit marker: the coordinator wrote it on every
    # leader over the BROKER listener.
    consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"g-{topic}",
                         "isolation.level": "read_committed", **c.conf()})
    try:
        for p in range(3):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert high == 11
    finally:
        consumer.close()
