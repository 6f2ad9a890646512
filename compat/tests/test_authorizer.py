"""ACLs with the authorizer on (issue 16, part 2; docs/security.md).

A private broker with a SASL_PLAINTEXT listener (PLAIN users admin, alice, bob; admin
is a super user). ACLs are managed with Kafka's kafka-acls.sh (AclCommand) as admin;
confluent-kafka then gets Kafka's errors where an ACL is missing:
TOPIC_AUTHORIZATION_FAILED on produce, GROUP_AUTHORIZATION_FAILED on joining a group,
topics it may not describe hidden from Metadata.
"""
import shutil
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import OP_TIMEOUT, consume, produce
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with ACLs")

USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory, kafka_libs):  # noqa: F811
    RUNS.mkdir(parents=True, exist_ok=True)
    d = tmp_path_factory.mktemp("authz")
    port = free_port()
    users = "\n".join(f'{u} = "{p}"' for u, p in USERS.items())
    conf = d / "spate.toml"
    conf.write_text(f"""
listeners = "SASL_PLAINTEXT://127.0.0.1:{port}"

[sasl]
enabled_mechanisms = ["PLAIN"]

[sasl.plain.users]
{users}

[authorizer]
enable = true
super_users = "User:admin"
""")
    admin_props = d / "admin.properties"
    admin_props.write_text(client_props("admin"))
    broker = SpateBroker(RUNS / f"spate-authz-{uuid.uuid4().hex[:10]}", port,
                         ["--config", str(conf)], listen_flag=False)
    broker.start()
    yield broker, admin_props
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def client_props(user):
    return ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
            f'required username="{user}" password="{USERS[user]}";\n')


def conf(user):
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
            "sasl.username": user, "sasl.password": USERS[user]}


def acls(libs, broker, props, *args):
    return tool(libs, "AclCommand", "--bootstrap-server", broker.bootstrap,
                "--command-config", props, *args)


def test_acls_tool_adds_lists_and_removes(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-tool-{uuid.uuid4().hex[:6]}"
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:alice",
         "--operation", "Write", "--operation", "Describe", "--topic", topic)
    acls(kafka_libs, broker, props, "--add", "--deny-principal", "User:bob",
         "--operation", "Read", "--resource-pattern-type", "prefixed", "--topic", "authz-")
    listed = acls(kafka_libs, broker, props, "--list", "--topic", topic)
    assert "User:alice" in listed and "WRITE" in listed and "DESCRIBE" in listed, listed
    matching = acls(kafka_libs, broker, props, "--list", "--topic", topic,
                    "--resource-pattern-type", "match")
    assert "User:bob" in matching and "PREFIXED" in matching, matching
    acls(kafka_libs, broker, props, "--remove", "--force", "--allow-principal", "User:alice",
         "--operation", "Write", "--topic", topic)
    listed = acls(kafka_libs, broker, props, "--list", "--topic", topic)
    assert "WRITE" not in listed and "DESCRIBE" in listed, listed
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", "authz-",
         "--resource-pattern-type", "prefixed")
    assert "User:" not in acls(kafka_libs, broker, props, "--list", "--topic", topic)


def test_produce_needs_write_and_metadata_hides_topics(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-p-{uuid.uuid4().hex[:6]}"
    # The super user creates the topic and writes to it without any ACL.
    assert produce(broker.bootstrap, topic, [{"value": b"admin"}], conf=conf("admin"))[0][0] is None
    # bob: nothing allowed. The topic is hidden, and producing is refused.
    listed = AdminClient({"bootstrap.servers": broker.bootstrap, **conf("bob")}).list_topics(timeout=15)
    assert topic not in listed.topics
    p = Producer({"bootstrap.servers": broker.bootstrap, **conf("bob"),
                  "message.timeout.ms": 10000})
    errors = []
    p.produce(topic, b"x", partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(OP_TIMEOUT)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors
    # alice may write (and so describe): the topic is listed and the write goes in.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:alice",
         "--operation", "Write", "--topic", topic)
    listed = AdminClient({"bootstrap.servers": broker.bootstrap, **conf("alice")}).list_topics(timeout=15)
    assert topic in listed.topics
    assert produce(broker.bootstrap, topic, [{"value": b"alice"}], conf=conf("alice"))[0][0] is None


def test_consumer_group_needs_read(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-c-{uuid.uuid4().hex[:6]}"
    group = f"authz-g-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topic, [{"value": b"v"}], conf=conf("admin"))
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Read", "--topic", topic)
    c = Consumer({"bootstrap.servers": broker.bootstrap, **conf("bob"), "group.id": group,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    err = None
    for _ in range(30):
        m = c.poll(1)
        if m is not None and m.error():
            err = m.error()
            break
    c.close()
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    # With READ on the group too, bob consumes.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Read", "--group", group)
    got = consume(broker.bootstrap, topic, 0, 1, conf=conf("bob"))
    assert [r["value"] for r in got] == [b"v"]
