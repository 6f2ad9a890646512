"""ACLs with the authorizer on (issue 16, part 2; docs/security.md).

A private broker with a SASL_PLAINTEXT listener (PLAIN users admin, alice, bob; admin
is a super user). ACLs are managed with Kafka's kafka-acls.sh (AclCommand) as admin;
confluent-kafka then gets Kafka's errors where an ACL is missing:
TOPIC_AUTHORIZATION_FAILED on produce, GROUP_AUTHORIZATION_FAILED on joining a group,
topics it may not describe hidden from Metadata.
"""
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection
from confluent_kafka.admin import AclOperation
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, OffsetSpec)

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import OP_TIMEOUT, consume, produce
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with ACLs")

USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret",
         "carol": "carol-secret", "dave": "dave-secret"}


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
    # FindCoordinator (DESCRIBE on the group) or JoinGroup (READ) refuses it; librdkafka
    # raises the first and hands the second over as a message.
    for _ in range(30):
        try:
            m = c.poll(1)
        except KafkaException as e:
            err = e.args[0]
            break
        if m is not None and m.error():
            err = m.error()
            break
    c.close()
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    # With READ on the group too, bob consumes.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Read", "--group", group)
    # (Its own group: librdkafka looks the group up even for assigned partitions, and
    # FindCoordinator needs DESCRIBE on it.)
    got = consume(broker.bootstrap, topic, 0, 1, conf={**conf("bob"), "group.id": group})
    assert [r["value"] for r in got] == [b"v"]


def admin(broker, user):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **conf(user)})


def create_as_admin(broker, topic):
    root = admin(broker, "admin")
    assert error_of(root.create_topics([NewTopic(topic, 1)])[topic]) is None


def error_of(future):
    """The KafkaError code a future failed with (None when it succeeded)."""
    try:
        future.result(timeout=OP_TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0].code()


def test_topic_admin_needs_create_alter_delete_describe(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-t-{uuid.uuid4().hex[:6]}"
    bob = admin(broker, "bob")
    # CREATE: refused, then allowed once kafka-acls.sh grants it on the topic.
    assert error_of(bob.create_topics([NewTopic(topic, 1)])[topic]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Create", "--topic", topic)
    assert error_of(bob.create_topics([NewTopic(topic, 1)])[topic]) is None
    # ALTER for more partitions.
    grow = lambda n: bob.create_partitions([NewPartitions(topic, n)])[topic]  # noqa: E731
    assert error_of(grow(2)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Alter", "--topic", topic)
    assert error_of(grow(2)) is None
    # DESCRIBE for ListOffsets: bob's ALTER implies it. (Without it, clients stop at
    # Metadata, which checks DESCRIBE as well.)
    tp = TopicPartition(topic, 0)
    ask = {tp: OffsetSpec.latest()}
    assert bob.list_offsets(ask)[tp].result(timeout=OP_TIMEOUT).offset == 0
    # DELETE for DeleteRecords and DeleteTopics.
    # Partition 0 explicitly: the topic has two partitions by now.
    reports = produce(broker.bootstrap, topic,
                      [{"value": b"a", "partition": 0}, {"value": b"b", "partition": 0}],
                      conf=conf("admin"))
    assert [(e, p, o) for e, p, o, _, _ in reports] == [(None, 0, 0), (None, 0, 1)]
    cut = [TopicPartition(topic, 0, 1)]
    assert error_of(bob.delete_records(cut)[cut[0]]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert error_of(bob.delete_topics([topic])[topic]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Delete", "--topic", topic)
    assert bob.delete_records(cut)[cut[0]].result(timeout=OP_TIMEOUT).low_watermark == 1
    assert error_of(bob.delete_topics([topic])[topic]) is None
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)


def test_configs_need_describe_configs_and_alter_configs(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-cf-{uuid.uuid4().hex[:6]}"
    root = admin(broker, "admin")
    assert error_of(root.create_topics([NewTopic(topic, 1)])[topic]) is None
    bob = admin(broker, "bob")
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    broker_res = ConfigResource(ConfigResource.Type.BROKER, "0")
    assert error_of(bob.describe_configs([res])[res]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert error_of(bob.describe_configs([broker_res])[broker_res]) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000",
                    incremental_operation=AlterConfigOpType.SET)])
    assert error_of(bob.incremental_alter_configs([change])[change]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The legacy AlterConfigs is checked alike.
    legacy = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "7200000"})
    assert error_of(bob.alter_configs([legacy])[legacy]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # DESCRIBE_CONFIGS lets bob read; ALTER_CONFIGS (which implies it) lets him change.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "DescribeConfigs", "--topic", topic)
    described = bob.describe_configs([res])[res].result(timeout=OP_TIMEOUT)
    assert "retention.ms" in described
    assert error_of(bob.incremental_alter_configs([change])[change]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "AlterConfigs", "--topic", topic)
    assert error_of(bob.incremental_alter_configs([change])[change]) is None
    described = bob.describe_configs([res])[res].result(timeout=OP_TIMEOUT)
    assert described["retention.ms"].value == "7200000"
    # The cluster's ALTER_CONFIGS covers brokers.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "DescribeConfigs", "--cluster")
    assert bob.describe_configs([broker_res])[broker_res].result(timeout=OP_TIMEOUT)
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)
    acls(kafka_libs, broker, props, "--remove", "--force", "--cluster")


def test_group_offsets_and_admin_need_group_acls(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-o-{uuid.uuid4().hex[:6]}"
    group = f"authz-og-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topic, [{"value": b"v"}], conf=conf("admin"))
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Read", "--topic", topic)
    bob = admin(broker, "bob")
    tps = [TopicPartition(topic, 0, 1)]
    commit = lambda: bob.alter_consumer_group_offsets(  # noqa: E731
        [ConsumerGroupTopicPartitions(group, tps)])[group]
    fetch = lambda: bob.list_consumer_group_offsets(  # noqa: E731
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])])[group]
    # Without READ on the group: OffsetCommit, OffsetFetch and DescribeGroups (or the
    # FindCoordinator before them) fail with GROUP_AUTHORIZATION_FAILED.
    assert error_of(commit()) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert error_of(fetch()) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert error_of(bob.describe_consumer_groups([group])[group]) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    # DESCRIBE on the group passes FindCoordinator, OffsetFetch and DescribeGroups;
    # OffsetCommit still needs READ.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Describe", "--group", group)
    committed = commit().result(timeout=OP_TIMEOUT).topic_partitions
    assert [p.error.code() for p in committed] == [KafkaError.GROUP_AUTHORIZATION_FAILED]
    got = fetch().result(timeout=OP_TIMEOUT).topic_partitions
    assert [(p.topic, p.partition, p.offset) for p in got] == [(topic, 0, -1001)]
    assert error_of(bob.describe_consumer_groups([group])[group]) is None
    # READ on the group: the commit goes in and reads back.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Read", "--group", group)
    assert [p.error for p in commit().result(timeout=OP_TIMEOUT).topic_partitions] == [None]
    got = fetch().result(timeout=OP_TIMEOUT).topic_partitions
    assert [(p.topic, p.partition, p.offset) for p in got] == [(topic, 0, 1)]
    # Listing groups shows only those bob may describe.
    listed = bob.list_consumer_groups().result(timeout=OP_TIMEOUT).valid
    assert [g.group_id for g in listed] == [group], listed
    # DeleteGroups needs DELETE on the group.
    assert error_of(bob.delete_consumer_groups([group])[group]) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:bob",
         "--operation", "Delete", "--group", group)
    assert error_of(bob.delete_consumer_groups([group])[group]) is None
    acls(kafka_libs, broker, props, "--remove", "--force", "--group", group)
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)


def test_idempotent_producer_needs_idempotent_write_or_some_topic_write(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-i-{uuid.uuid4().hex[:6]}"
    create_as_admin(broker, topic)

    def attempt():
        errors = []
        p = Producer({"bootstrap.servers": broker.bootstrap, **conf("carol"),
                      "enable.idempotence": True, "message.timeout.ms": 10000})
        reports = []
        p.produce(topic, b"x", on_delivery=lambda e, m: reports.append(e))
        try:
            p.flush(OP_TIMEOUT)
        except (KafkaException, SystemError) as e:
            # A fatal error; raised while a delivery callback runs, it comes wrapped.
            fatal = e if isinstance(e, KafkaException) else e.__cause__ or e.__context__
            errors.append(fatal.args[0])
        return errors, reports

    # carol may only DESCRIBE the topic: InitProducerId (no transactional id) is
    # CLUSTER_AUTHORIZATION_FAILED.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:carol",
         "--operation", "Describe", "--topic", topic)
    errors, reports = attempt()
    codes = {e.code() for e in errors} | {e.code() for e in reports if e is not None}
    assert KafkaError.CLUSTER_AUTHORIZATION_FAILED in codes, (errors, reports)
    # WRITE on one topic is enough (Kafka 3.0+, KIP-679), as is IDEMPOTENT_WRITE.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:carol",
         "--operation", "Write", "--topic", topic)
    errors, reports = attempt()
    assert reports == [None], (errors, reports)
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)


def test_transactional_producer_needs_write_on_its_transactional_id(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-x-{uuid.uuid4().hex[:6]}"
    tid = f"authz-tx-{uuid.uuid4().hex[:6]}"
    create_as_admin(broker, topic)
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:dave",
         "--operation", "Write", "--topic", topic)

    def producer():
        return Producer({"bootstrap.servers": broker.bootstrap, **conf("dave"),
                         "transactional.id": tid})

    def init_error():
        with pytest.raises(KafkaException) as e:
            producer().init_transactions(OP_TIMEOUT)
        return e.value.args[0].code()

    # No ACL on the id: FindCoordinator (DESCRIBE) refuses it.
    assert init_error() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # DESCRIBE only: InitProducerId (WRITE) refuses it.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:dave",
         "--operation", "Describe", "--transactional-id", tid)
    assert init_error() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # WRITE on the id: the transaction commits.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:dave",
         "--operation", "Write", "--transactional-id", tid)
    p = producer()
    p.init_transactions(OP_TIMEOUT)
    p.begin_transaction()
    p.produce(topic, b"in-txn")
    p.commit_transaction(OP_TIMEOUT)
    got = consume(broker.bootstrap, topic, 0, 1, conf=conf("admin"))
    assert [r["value"] for r in got] == [b"in-txn"]
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)
    acls(kafka_libs, broker, props, "--remove", "--force", "--transactional-id", tid)


def test_authorized_operations_kip_430(secured, kafka_libs):  # noqa: F811
    broker, props = secured
    topic = f"authz-k-{uuid.uuid4().hex[:6]}"
    create_as_admin(broker, topic)
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:alice",
         "--operation", "Read", "--topic", topic)

    def topic_ops(user):
        client = admin(broker, user)
        d = client.describe_topics(TopicCollection([topic]), include_authorized_operations=True)
        return set(d[topic].result(timeout=OP_TIMEOUT).authorized_operations)

    # READ and the DESCRIBE it implies; a super user every topic operation.
    assert topic_ops("alice") == {AclOperation.READ, AclOperation.DESCRIBE}
    assert topic_ops("admin") == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS}
    root = admin(broker, "admin")
    cluster = root.describe_cluster(include_authorized_operations=True).result(timeout=OP_TIMEOUT)
    assert AclOperation.CLUSTER_ACTION in set(cluster.authorized_operations)
    acls(kafka_libs, broker, props, "--remove", "--force", "--topic", topic)


def test_describe_quorum_needs_describe_on_the_cluster(secured, kafka_libs, tmp_path):  # noqa: F811
    """kafka-metadata-quorum.sh: Kafka's controller checks DESCRIBE on the cluster."""
    broker, props = secured
    bob = tmp_path / "bob.properties"
    bob.write_text(client_props("bob"))
    args = ["--bootstrap-server", broker.bootstrap, "--command-config"]
    status = tool(kafka_libs, "MetadataQuorumCommand", *args, props, "describe", "--status")
    assert "LeaderId" in status, status
    with pytest.raises(AssertionError) as denied:
        tool(kafka_libs, "MetadataQuorumCommand", *args, bob, "describe", "--status")
    assert "ClusterAuthorizationException" in str(denied.value), denied.value


def test_consumer_protocol_group_needs_describe_on_its_topics(secured, kafka_libs):  # noqa: F811
    """KIP-848 (KAFKA-18813): a heartbeat naming a topic the member may not describe gets
    TOPIC_AUTHORIZATION_FAILED; ConsumerGroupDescribe hides a group using such a topic."""
    broker, props = secured
    topic = f"authz-848-{uuid.uuid4().hex[:6]}"
    group = f"authz-848-g-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topic, [{"value": b"v"}], conf=conf("admin"))
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:carol",
         "--operation", "Read", "--group", group)

    def member():
        c = Consumer({"bootstrap.servers": broker.bootstrap, **conf("carol"), "group.id": group,
                      "group.protocol": "consumer", "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        return c

    def first_error_or_record(c):
        for _ in range(30):
            try:
                m = c.poll(1)
            except KafkaException as e:
                return e.args[0]
            if m is not None:
                return m.error() or m.value()

    c = member()
    err = first_error_or_record(c)
    c.close()
    assert isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # READ on the topic (which implies DESCRIBE): carol consumes.
    acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:carol",
         "--operation", "Read", "--topic", topic)
    c = member()
    try:
        assert first_error_or_record(c) == b"v"
        # dave may describe the group but not the topic its member uses: the group is
        # not described to him (kafka-consumer-groups.sh describes with
        # ConsumerGroupDescribe); admin sees it.
        acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:dave",
             "--operation", "Describe", "--group", group)
        dave = props.parent / "dave.properties"
        dave.write_text(client_props("dave"))
        describe = ["--bootstrap-server", broker.bootstrap, "--describe", "--group", group,
                    "--members"]
        cmd = "consumer.group.ConsumerGroupCommand"
        assert topic in tool(kafka_libs, cmd, *describe, "--verbose", "--command-config", props)
        # (The tool prints the error and exits 0.)
        hidden = tool(kafka_libs, cmd, *describe, "--command-config", dave)
        assert "TopicAuthorizationException: The described group uses topics that the " \
            "client is not authorized to describe." in hidden, hidden
        assert topic not in hidden
    finally:
        c.close()


def test_a_subscription_regex_resolves_to_the_topics_its_member_may_describe(secured, kafka_libs):  # noqa: F811
    """KIP-848 regex subscriptions (KAFKA-18813): the broker resolves the regex with the
    ACLs of the member that subscribed; a topic it may not describe is left out until
    an ACL allows it."""
    broker, props = secured
    tag = uuid.uuid4().hex[:6]
    seen, hidden = f"authz-rx{tag}-seen", f"authz-rx{tag}-hidden"
    group = f"authz-rx-g-{tag}"
    for t in (seen, hidden):
        produce(broker.bootstrap, t, [{"value": t.encode()}], conf=conf("admin"))
    for resource in (["--group", group], ["--topic", seen]):
        acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:carol",
             "--operation", "Read", *resource)
    c = Consumer({"bootstrap.servers": broker.bootstrap, **conf("carol"), "group.id": group,
                  "group.protocol": "consumer", "auto.offset.reset": "earliest"})
    c.subscribe([f"^authz-rx{tag}-.*"])

    def read(seconds):
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        return got

    try:
        # Long enough for the hidden topic to have been assigned, were it matched.
        assert read(12) == [seen.encode()]
        assert hidden not in {tp.topic for tp in c.assignment()}
        # Allowed now: the ACL change re-resolves the regex with carol's ACLs.
        acls(kafka_libs, broker, props, "--add", "--allow-principal", "User:carol",
             "--operation", "Read", "--topic", hidden)
        assert read(15) == [hidden.encode()]
    finally:
        c.close()


def test_update_features_and_tokens_for_others_need_their_acls(secured, kafka_libs, tmp_path):  # noqa: F811
    """kafka-features.sh: UpdateFeatures needs ALTER on the cluster (Kafka's controller);
    kafka-delegation-tokens.sh: a token for another owner needs CREATE_TOKENS on that
    user (Kafka's broker checks it before the controller finds tokens disabled)."""
    broker, props = secured
    bob = tmp_path / "bob.properties"
    bob.write_text(client_props("bob"))

    def run(cls, config, *args):
        r = subprocess.run(["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*",
                            "org.apache.kafka.tools." + cls, "--bootstrap-server", broker.bootstrap,
                            "--command-config", str(config), *args],
                           capture_output=True, text=True, timeout=90)
        return r.returncode, r.stdout + r.stderr

    upgrade = ["upgrade", "--feature", "transaction.version=2"]
    code, out = run("FeatureCommand", props, *upgrade)
    assert (code, out.splitlines()[0]) == (0, "transaction.version was upgraded to 2."), out
    code, out = run("FeatureCommand", bob, *upgrade)
    assert code == 1
    assert "Could not upgrade transaction.version to 2. Cluster authorization failed." in out, out

    create = ["--create", "--max-life-time-period", "-1"]
    code, out = run("DelegationTokenCommand", bob, *create, "--owner-principal", "User:carol")
    assert code == 1
    assert ("DelegationTokenAuthorizationException: Delegation Token authorization failed."
            in out), out
    code, out = run("DelegationTokenCommand", bob, *create)
    assert code == 1
    assert "DelegationTokenDisabledException: Delegation Token feature is not enabled." in out, out
