"""The schema registry built into spate (--schema-registry), driven by confluent-kafka's
SchemaRegistryClient and its Avro, JSON Schema and Protobuf serializers, plus raw HTTP for
exact error codes. Outcomes follow Confluent's documentation (compatibility types table,
API reference error codes).

Runs only against a spate the suite starts itself (a private broker with the registry on).
"""
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.schema_registry import (Schema, SchemaReference, SchemaRegistryClient,
                                             SchemaRegistryError)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import EXTERNAL, _new_broker, free_port, port_accepts
from kafkautil import OP_TIMEOUT, admin, consume, create_topic

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs a spate the suite starts")

CT = "application/vnd.schemaregistry.v1+json"


class RegistryBroker:
    """A private spate with the schema registry (and /metrics) on loopback ports."""

    def __init__(self):
        self.sr_port = free_port()
        self.http_port = free_port()
        self.broker = _new_broker(["--schema-registry", f"127.0.0.1:{self.sr_port}",
                                   "--http", f"127.0.0.1:{self.http_port}"])

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sr_port}"

    @property
    def bootstrap(self):
        return self.broker.bootstrap

    def start(self):
        self.broker.start()
        deadline = time.monotonic() + 30
        while not port_accepts(self.sr_port):
            assert time.monotonic() < deadline, "registry did not listen:\n" + self.broker.log_tail()
            assert self.broker.proc.poll() is None, self.broker.log_tail()
            time.sleep(0.05)

    def client(self):
        return SchemaRegistryClient({"url": self.url})


@pytest.fixture(scope="module")
def sr():
    b = RegistryBroker()
    b.start()
    yield b
    b.broker.stop()


def http(sr, method, path, body=None, content_type=CT):
    """(status, content type, parsed body) of one raw request."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(sr.url + path, data=data, method=method,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, r.headers.get("Content-Type"), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers.get("Content-Type"), json.loads(raw) if raw else None


def record(name, fields, namespace="compat"):
    return json.dumps({"type": "record", "name": name, "namespace": namespace, "fields": fields})


def subject():
    return f"s-{uuid.uuid4().hex[:8]}"


USER_V1 = record("User", [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}])


# ---- serializers through spate --------------------------------------------------------------

def test_avro_serializer_round_trip(sr, topic_name):
    client = sr.client()
    create_topic(sr.bootstrap, topic_name, 1)
    ser = AvroSerializer(client, USER_V1)
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    users = [{"id": i, "name": f"user-{i}"} for i in range(20)]
    p = Producer({"bootstrap.servers": sr.bootstrap})
    for u in users:
        p.produce(topic_name, value=ser(u, ctx))
    assert p.flush(OP_TIMEOUT) == 0
    got = consume(sr.bootstrap, topic_name, 0, len(users))
    de = AvroDeserializer(client)
    assert [de(m["value"], ctx) for m in got] == users
    # The serializer registered under TopicNameStrategy's subject; wire format 0 + id.
    latest = client.get_latest_version(f"{topic_name}-value")
    assert latest.version == 1
    assert got[0]["value"][0] == 0
    assert int.from_bytes(got[0]["value"][1:5], "big") == latest.schema_id
    assert json.loads(latest.schema.schema_str) == json.loads(USER_V1)


def test_json_schema_serializer_round_trip(sr, topic_name):
    client = sr.client()
    create_topic(sr.bootstrap, topic_name, 1)
    schema = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Point",
                         "type": "object", "properties": {"x": {"type": "integer"},
                                                          "y": {"type": "integer"}},
                         "required": ["x", "y"]})
    ser = JSONSerializer(schema, client)
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    points = [{"x": i, "y": -i} for i in range(5)]
    p = Producer({"bootstrap.servers": sr.bootstrap})
    for pt in points:
        p.produce(topic_name, value=ser(pt, ctx))
    assert p.flush(OP_TIMEOUT) == 0
    got = consume(sr.bootstrap, topic_name, 0, len(points))
    de = JSONDeserializer(None, schema_registry_client=client)
    assert [de(m["value"], ctx) for m in got] == points
    reg = client.get_latest_version(f"{topic_name}-value")
    assert reg.schema.schema_type == "JSON"


def _reading_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fdp = descriptor_pb2.FileDescriptorProto(name="compat_sr_reading.proto", package="compatsr",
                                             syntax="proto3")
    m = fdp.message_type.add(name="Reading")
    F = descriptor_pb2.FieldDescriptorProto
    m.field.add(name="sensor", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    m.field.add(name="value", number=2, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("compatsr.Reading"))


def test_protobuf_serializer_round_trip(sr, topic_name):
    client = sr.client()
    create_topic(sr.bootstrap, topic_name, 1)
    Reading = _reading_class()
    ser = ProtobufSerializer(Reading, client, {"use.deprecated.format": False})
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    readings = [Reading(sensor=f"s{i}", value=i / 2) for i in range(5)]
    p = Producer({"bootstrap.servers": sr.bootstrap})
    for r in readings:
        p.produce(topic_name, value=ser(r, ctx))
    assert p.flush(OP_TIMEOUT) == 0
    got = consume(sr.bootstrap, topic_name, 0, len(readings))
    de = ProtobufDeserializer(Reading, {"use.deprecated.format": False})
    assert [de(m["value"], ctx) for m in got] == readings
    reg = client.get_latest_version(f"{topic_name}-value")
    assert reg.schema.schema_type == "PROTOBUF"
    # Looking the same schema up again finds the same id.
    assert client.lookup_schema(f"{topic_name}-value", reg.schema).schema_id == reg.schema_id


# ---- compatibility: Confluent's documented rules ---------------------------------------------

F_ID = {"name": "id", "type": "long"}
F_ID_INT = {"name": "id", "type": "int"}
F_ID_STR = {"name": "id", "type": "string"}
F_OPT = {"name": "email", "type": ["null", "string"], "default": None}
F_REQ = {"name": "email", "type": "string"}
F_DEF = {"name": "email", "type": "string", "default": ""}
ENUM2 = {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}}
ENUM3 = {"name": "color", "type": {"type": "enum", "name": "Color",
                                   "symbols": ["RED", "GREEN", "BLUE"]}}

EVOLUTIONS = {
    # name: (old fields, new fields, {level: accepted})
    "add optional field": ([F_ID], [F_ID, F_OPT],
                           {"BACKWARD": True, "FORWARD": True, "FULL": True, "NONE": True}),
    "add required field": ([F_ID], [F_ID, F_REQ],
                           {"BACKWARD": False, "FORWARD": True, "FULL": False, "NONE": True}),
    "delete field with default": ([F_ID, F_DEF], [F_ID],
                                  {"BACKWARD": True, "FORWARD": True, "FULL": True, "NONE": True}),
    "delete required field": ([F_ID, F_REQ], [F_ID],
                              {"BACKWARD": True, "FORWARD": False, "FULL": False, "NONE": True}),
    "widen int to long": ([F_ID_INT], [F_ID],
                          {"BACKWARD": True, "FORWARD": False, "FULL": False, "NONE": True}),
    "narrow long to int": ([F_ID], [F_ID_INT],
                           {"BACKWARD": False, "FORWARD": True, "FULL": False, "NONE": True}),
    "change long to string": ([F_ID], [F_ID_STR],
                              {"BACKWARD": False, "FORWARD": False, "FULL": False, "NONE": True}),
    "add enum symbol": ([F_ID, ENUM2], [F_ID, ENUM3],
                        {"BACKWARD": True, "FORWARD": False, "FULL": False, "NONE": True}),
}

CASES = [(name, level, ok) for name, (_, _, levels) in EVOLUTIONS.items()
         for level, ok in levels.items()]


@pytest.mark.parametrize("name,level,accepted", CASES, ids=[f"{n}-{lv}" for n, lv, _ in CASES])
def test_evolution_table(sr, name, level, accepted):
    old, new, _ = EVOLUTIONS[name]
    client = sr.client()
    s = subject()
    assert client.set_compatibility(s, level) == {"compatibility": level}
    first = client.register_schema(s, Schema(record("Rec", old), "AVRO"))
    candidate = Schema(record("Rec", new), "AVRO")
    assert client.test_compatibility(s, candidate) is accepted
    if accepted:
        second = client.register_schema(s, candidate)
        assert second != first
        assert client.get_versions(s) == [1, 2]
    else:
        with pytest.raises(SchemaRegistryError) as e:
            client.register_schema(s, candidate)
        assert (e.value.http_status_code, e.value.error_code) == (409, 409)
        assert client.get_versions(s) == [1]


V_A = [{"name": "a", "type": "int"}]
V_AB_DEF = [{"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": "x"}]
V_AB_REQ = [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]

TRANSITIVE = [
    # (level, three versions in order, third accepted)
    ("BACKWARD", [V_A, V_AB_DEF, V_AB_REQ], True),
    ("BACKWARD_TRANSITIVE", [V_A, V_AB_DEF, V_AB_REQ], False),
    ("FORWARD", [V_AB_REQ, V_AB_DEF, V_A], True),
    ("FORWARD_TRANSITIVE", [V_AB_REQ, V_AB_DEF, V_A], False),
    ("FULL", [V_A, V_AB_DEF, V_AB_REQ], True),
    ("FULL_TRANSITIVE", [V_A, V_AB_DEF, V_AB_REQ], False),
]


@pytest.mark.parametrize("level,versions,accepted", TRANSITIVE, ids=[t[0] for t in TRANSITIVE])
def test_transitive_levels(sr, level, versions, accepted):
    client = sr.client()
    s = subject()
    client.set_compatibility(s, level)
    # The first two are compatible with each other under every level here.
    client.register_schema(s, Schema(record("T", versions[0]), "AVRO"))
    client.register_schema(s, Schema(record("T", versions[1]), "AVRO"))
    third = Schema(record("T", versions[2]), "AVRO")
    if accepted:
        client.register_schema(s, third)
        assert client.get_versions(s) == [1, 2, 3]
    else:
        with pytest.raises(SchemaRegistryError) as e:
            client.register_schema(s, third)
        assert e.value.error_code == 409
        # The check against the latest version alone passes; against all it fails.
        assert client.test_compatibility(s, third, version=2) is True
        assert client.test_compatibility_all_versions(s, third) is False


def _obj(props, closed=False, required=()):
    s = {"type": "object", "properties": props}
    if closed:
        s["additionalProperties"] = False
    if required:
        s["required"] = list(required)
    return json.dumps(s)


S_STR, S_INT, S_NUM, S_BOOL = ({"type": t} for t in ("string", "integer", "number", "boolean"))


def _with_def(definition):
    return {"definitions": {"v": definition}, "type": "object",
            "properties": {"v": {"$ref": "#/definitions/v"}}}


def _tree(leaf):
    return {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": leaf},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node"}


def _patterned(props):
    return {"type": "object", "properties": {"a": S_STR, **props},
            "patternProperties": {"^x_": S_STR}, "additionalProperties": False}


def _tuple(items, open_):
    s = {"type": "array", "items": items}
    if not open_:
        s["additionalItems"] = False
    return s


P_A = {"a": {"type": "string"}}
P_AB = {"a": {"type": "string"}, "b": {"type": "integer"}}

JSON_EVOLUTIONS = [
    # (name, old, new, level, accepted), after Confluent's JSON Schema rules
    ("add property, closed model", _obj(P_A, True), _obj(P_AB, True), "BACKWARD", True),
    ("add property, open model", _obj(P_A), _obj(P_AB), "BACKWARD", False),
    ("remove property, open model", _obj(P_AB), _obj(P_A), "BACKWARD", True),
    ("remove property, closed model", _obj(P_AB, True), _obj(P_A, True), "BACKWARD", False),
    ("add required property", _obj(P_A, True), _obj(P_AB, True, ["b"]), "BACKWARD", False),
    ("integer to number", _obj({"a": {"type": "integer"}}), _obj({"a": {"type": "number"}}),
     "BACKWARD", True),
    ("number to integer", _obj({"a": {"type": "number"}}), _obj({"a": {"type": "integer"}}),
     "BACKWARD", False),
    ("number to integer, forward", _obj({"a": {"type": "number"}}),
     _obj({"a": {"type": "integer"}}), "FORWARD", True),
    ("add property, open model, none", _obj(P_A), _obj(P_AB), "NONE", True),
] + [
    # Combinators, references, patterns, tuples and dependencies, by Confluent's
    # json.diff rules (SUM_TYPE_EXTENDED, PRODUCT_TYPE_NARROWED, NOT_TYPE_NARROWED, ...).
    (name, json.dumps(old), json.dumps(new), level, accepted)
    for name, old, new, level, accepted in [
        ("oneOf branch added", {"oneOf": [S_STR, S_INT]}, {"oneOf": [S_STR, S_INT, S_BOOL]},
         "BACKWARD", True),
        ("oneOf branch added, forward", {"oneOf": [S_STR, S_INT]},
         {"oneOf": [S_STR, S_INT, S_BOOL]}, "FORWARD", False),
        ("anyOf branch removed", {"anyOf": [S_STR, S_INT]}, {"anyOf": [S_STR]}, "BACKWARD",
         False),
        ("anyOf branch widened", {"anyOf": [S_STR, S_INT]}, {"anyOf": [S_INT, S_NUM]},
         "FULL", False),
        ("oneOf to anyOf", {"oneOf": [S_STR, S_INT]}, {"anyOf": [S_STR, S_INT]}, "BACKWARD", True),
        ("anyOf to oneOf", {"anyOf": [S_STR, S_INT]}, {"oneOf": [S_STR, S_INT]}, "BACKWARD",
         False),
        ("allOf part removed", {"allOf": [S_STR, {"maxLength": 9}]}, {"allOf": [S_STR]},
         "BACKWARD", True),
        ("allOf part added", {"allOf": [S_STR]}, {"allOf": [S_STR, {"maxLength": 9}]},
         "BACKWARD", False),
        ("made nullable", S_STR, {"type": ["string", "null"]}, "BACKWARD", True),
        ("made nullable, full", S_STR, {"type": ["string", "null"]}, "FULL", False),
        ("not narrowed", {"not": {"type": ["string", "null"]}}, {"not": S_STR}, "BACKWARD", True),
        ("not extended", {"not": S_STR}, {"not": {"type": ["string", "null"]}}, "BACKWARD",
         False),
        ("$ref target widened", _with_def(S_INT), _with_def(S_NUM), "BACKWARD", True),
        ("$ref target changed", _with_def(S_INT), _with_def(S_STR), "BACKWARD", False),
        ("recursive $ref widened", _tree("integer"), _tree("number"), "BACKWARD", True),
        ("recursive $ref narrowed", _tree("number"), _tree("integer"), "BACKWARD", False),
        ("property covered by patternProperties", _patterned({}),
         _patterned({"x_b": S_STR}), "BACKWARD", True),
        ("property not covered by patternProperties", _patterned({}),
         _patterned({"x_b": S_INT}), "BACKWARD", False),
        ("tuple item added, closed", _tuple([S_STR], False), _tuple([S_STR, S_INT], False),
         "BACKWARD", True),
        ("tuple item added, open", _tuple([S_STR], True), _tuple([S_STR, S_INT], True),
         "BACKWARD", False),
        ("tuple item removed, open", _tuple([S_STR, S_INT], True), _tuple([S_STR], True),
         "BACKWARD", True),
        ("dependency added", {"type": "object"}, {"type": "object", "dependencies": {"a": ["b"]}},
         "BACKWARD", False),
        ("dependency narrowed", {"type": "object", "dependencies": {"a": ["b", "c"]}},
         {"type": "object", "dependencies": {"a": ["b"]}}, "BACKWARD", True),
        ("if/then changed (not compared)", {"if": {"required": ["a"]}, "then": {"required": ["b"]}},
         {"if": {"required": ["a"]}, "then": {"required": ["c"]}}, "FULL", True),
    ]
]


@pytest.mark.parametrize("name,old,new,level,accepted", JSON_EVOLUTIONS,
                         ids=[e[0] for e in JSON_EVOLUTIONS])
def test_json_schema_evolution(sr, name, old, new, level, accepted):
    client = sr.client()
    s = subject()
    client.set_compatibility(s, level)
    client.register_schema(s, Schema(old, "JSON"))
    assert client.test_compatibility(s, Schema(new, "JSON")) is accepted
    if accepted:
        client.register_schema(s, Schema(new, "JSON"))
        assert client.get_versions(s) == [1, 2]
    else:
        with pytest.raises(SchemaRegistryError) as e:
            client.register_schema(s, Schema(new, "JSON"))
        assert e.value.error_code == 409


def test_json_schema_references_and_invalid_refs(sr):
    """A $ref to another subject's schema resolves through the registered reference
    (by its name), and is compared through it; a $ref that resolves nowhere is an
    invalid schema (42201), as in Confluent."""
    client = sr.client()
    addr_s, user_s = subject(), subject()
    v1 = client.register_schema(addr_s, Schema(json.dumps(S_INT), "JSON"))
    client.set_compatibility(addr_s, "NONE")
    client.register_schema(addr_s, Schema(json.dumps(S_STR), "JSON"))
    user = json.dumps({"type": "object", "properties": {"zip": {"$ref": "addr.json"}}})
    uid = client.register_schema(
        user_s, Schema(user, "JSON", [SchemaReference("addr.json", addr_s, 1)]))
    assert uid != v1
    # The same text pointing at version 2 (a string instead of an integer).
    moved = Schema(user, "JSON", [SchemaReference("addr.json", addr_s, 2)])
    assert client.test_compatibility(user_s, moved) is False
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(subject(), Schema(user, "JSON"))
    assert (e.value.http_status_code, e.value.error_code) == (422, 42201)
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(subject(), Schema('{"$ref": "#/definitions/none"}', "JSON"))
    assert (e.value.http_status_code, e.value.error_code) == (422, 42201)


PROTO_V1 = """syntax = "proto3";
package compat.evo;
message Order {
  int64 id = 1;
  string note = 2;
  repeated int32 qty = 3;
  oneof pay { string card = 4; string iban = 5; }
  message Line { string sku = 1; }
  Line line = 6;
}
"""

PROTO_EVOLUTIONS = [
    # (name, from, to, accepted at BACKWARD), after Confluent's Protobuf rules
    ("add field", "int64 id = 1;", "int64 id = 1; string extra = 9;", True),
    ("remove field", "string note = 2;", "", True),
    ("rename field", "string note = 2;", "string remark = 2;", True),
    ("int64 to uint32", "int64 id = 1;", "uint32 id = 1;", True),
    ("string to bytes", "string note = 2;", "bytes note = 2;", True),
    ("int64 to string", "int64 id = 1;", "string id = 1;", False),
    ("int64 to sint64", "int64 id = 1;", "sint64 id = 1;", False),
    ("repeated to single number", "repeated int32 qty = 3;", "int32 qty = 3;", False),
    ("oneof member removed", "string iban = 5;", "", False),
    ("nested message removed", "message Line { string sku = 1; }\n  Line line = 6;",
     "", False),
    ("nested field type changed", "string sku = 1;", "int32 sku = 1;", False),
    ("package changed", "package compat.evo;", "package compat.evo2;", False),
    ("int64 to bool (varint group)", "int64 id = 1;", "bool id = 1;", True),
    ("message type renamed", "message Line { string sku = 1; }\n  Line line = 6;",
     "message Row { string sku = 1; }\n  Row line = 6;", False),
    ("same type, qualified name", "Line line = 6;", ".compat.evo.Order.Line line = 6;", True),
    ("field moved out of oneof", "oneof pay { string card = 4; string iban = 5; }",
     "string card = 4; oneof pay { string iban = 5; }", True),
    ("fields moved into a oneof", "int64 id = 1;\n  string note = 2;",
     "oneof both { int64 id = 1; string note = 2; }", False),
]


@pytest.mark.parametrize("name,old,new,accepted", PROTO_EVOLUTIONS,
                         ids=[e[0] for e in PROTO_EVOLUTIONS])
def test_protobuf_evolution(sr, name, old, new, accepted):
    client = sr.client()
    s = subject()
    changed = PROTO_V1.replace(old, new)
    assert changed != PROTO_V1
    client.register_schema(s, Schema(PROTO_V1, "PROTOBUF"))
    assert client.test_compatibility(s, Schema(changed, "PROTOBUF")) is accepted
    if accepted:
        client.register_schema(s, Schema(changed, "PROTOBUF"))
        assert client.get_versions(s) == [1, 2]
    else:
        with pytest.raises(SchemaRegistryError) as e:
            client.register_schema(s, Schema(changed, "PROTOBUF"))
        assert e.value.error_code == 409


PROTO_INVALID = [
    # (name, schema): what protoc refuses, Confluent answers 42201 "Invalid schema".
    ("unknown type", "message A { Missing m = 1; }"),
    ("unknown nested type", "message A { message B {} A.C c = 1; }"),
    ("duplicate field number", "message A { int32 x = 1; string y = 1; }"),
    ("duplicate field name", "message A { int32 x = 1; string x = 2; }"),
    ("field number 0", "message A { int32 x = 0; }"),
    ("field number too large", "message A { int32 x = 536870912; }"),
    ("field number in 19000-19999", "message A { int32 x = 19001; }"),
    ("reserved number", "message A { reserved 3 to 5; int32 x = 4; }"),
    ("reserved name", 'message A { reserved "x"; int32 x = 1; }'),
    ("duplicate enum value", "enum E { A = 0; A = 1; }"),
    ("enum alias without allow_alias", "enum E { A = 0; B = 0; }"),
    ("proto3 enum not starting at 0", "enum E { A = 1; }"),
    ("enum values clash in one scope", "enum E { X = 0; } enum F { X = 0; }"),
    ("required in proto3", "message A { required int32 x = 1; }"),
    ("float map key", "message A { map<float, string> m = 1; }"),
    ("import without reference", 'import "other.proto"; message A { int32 x = 1; }'),
]


@pytest.mark.parametrize("name,body", PROTO_INVALID, ids=[c[0] for c in PROTO_INVALID])
def test_protobuf_schemas_must_compile(sr, name, body):
    client = sr.client()
    schema = 'syntax = "proto3";\npackage compat.bad;\n' + body
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(subject(), Schema(schema, "PROTOBUF"))
    assert (e.value.http_status_code, e.value.error_code) == (422, 42201), name
    assert "Invalid schema" in e.value.error_message


def test_protobuf_references_and_well_known_types(sr):
    """Types of a referenced file resolve through its import; a well-known import needs
    no reference; the referenced message is compared through the reference."""
    client = sr.client()
    money_s, order_s = subject(), subject()
    money = 'syntax = "proto3";\npackage compat.shared;\nmessage Money { int64 units = 1; }\n'
    client.register_schema(money_s, Schema(money, "PROTOBUF"))
    client.set_compatibility(money_s, "NONE")
    client.register_schema(money_s, Schema(money.replace("int64", "string"), "PROTOBUF"))
    order = ('syntax = "proto3";\npackage compat.shop;\nimport "shared/money.proto";\n'
             'import "google/protobuf/timestamp.proto";\n'
             'message Order { compat.shared.Money total = 1; google.protobuf.Timestamp at = 2; }\n')
    client.register_schema(
        order_s, Schema(order, "PROTOBUF", [SchemaReference("shared/money.proto", money_s, 1)]))
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(subject(), Schema(order, "PROTOBUF"))
    assert e.value.error_code == 42201
    moved = Schema(order, "PROTOBUF", [SchemaReference("shared/money.proto", money_s, 2)])
    assert client.test_compatibility(order_s, moved) is False


def test_protobuf_descriptor_against_text(sr, topic_name):
    """The Python serializer registers a base64 FileDescriptorProto; a later text schema
    is checked against it field by field."""
    client = sr.client()
    Reading = _reading_class()
    ser = ProtobufSerializer(Reading, client, {"use.deprecated.format": False})
    ser(Reading(sensor="a", value=1.0), SerializationContext(topic_name, MessageField.VALUE))
    s = f"{topic_name}-value"
    base = 'syntax = "proto3"; package compatsr; message Reading { string sensor = 1; %s }'
    assert client.test_compatibility(s, Schema(base % "double value = 2;", "PROTOBUF")) is True
    assert client.test_compatibility(
        s, Schema(base % "double value = 2; int32 unit = 3;", "PROTOBUF")) is True
    assert client.test_compatibility(s, Schema(base % "string value = 2;", "PROTOBUF")) is False


def test_concurrent_registrations_get_unique_ids(sr):
    """One writer: parallel registrations of distinct schemas get distinct ids, and the
    same schema registered in parallel under many subjects gets one id."""
    import threading
    tag = uuid.uuid4().hex[:8]
    results, errors = {}, []
    shared = record(f"Shared{tag}", [F_ID])

    def work(n):
        try:
            c = sr.client()
            own = c.register_schema(f"cc-{tag}-{n}", Schema(record(f"C{tag}x{n}", [F_ID]), "AVRO"))
            same = c.register_schema(f"cs-{tag}-{n}", Schema(shared, "AVRO"))
            results[n] = (own, same)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    own_ids = [r[0] for r in results.values()]
    assert len(set(own_ids)) == 16
    assert len({r[1] for r in results.values()}) == 1
    assert not set(own_ids) & {r[1] for r in results.values()}


def test_dedup_global_ids_and_lookup(sr):
    client = sr.client()
    a, b = subject(), subject()
    # A schema no other test registers.
    mine = record(f"D{uuid.uuid4().hex[:8]}", [F_ID, F_OPT])
    id_a = client.register_schema(a, Schema(mine, "AVRO"))
    # The same schema, reformatted, under another subject: the same global id.
    reformatted = json.dumps(json.loads(mine), indent=2, sort_keys=False)
    id_b = client.register_schema(b, Schema(reformatted, "AVRO"))
    assert id_a == id_b
    # Registering it again creates no version.
    assert client.register_schema(a, Schema(mine, "AVRO")) == id_a
    assert client.get_versions(a) == [1]
    found = client.lookup_schema(b, Schema(reformatted, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (id_a, 1, b)
    assert sorted(client.get_subjects_by_schema_id(id_a)) == sorted([a, b])
    status, _, body = http(sr, "GET", f"/schemas/ids/{id_a}/versions")
    assert status == 200 and sorted(body, key=lambda v: v["subject"]) == \
        sorted([{"subject": a, "version": 1}, {"subject": b, "version": 1}],
               key=lambda v: v["subject"])
    assert "AVRO" in client.get_schema_types()
    # normalize=true turns equivalent spellings into one stored form.
    c = subject()
    long_form = record("N", [{"name": "x", "type": {"type": "string"}}])
    short_form = record("N", [{"name": "x", "type": "string"}])
    id1 = client.register_schema(c, Schema(long_form, "AVRO"), normalize_schemas=True)
    id2 = client.register_schema(c, Schema(short_form, "AVRO"), normalize_schemas=True)
    assert id1 == id2 and client.get_versions(c) == [1]


def test_references(sr):
    client = sr.client()
    addr_s, user_s = subject(), subject()
    addr = record("Address", [{"name": "city", "type": "string"}])
    client.register_schema(addr_s, Schema(addr, "AVRO"))
    user = record("Person", [{"name": "home", "type": "compat.Address"}])
    # Without the reference the named type is unknown: invalid schema.
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(user_s, Schema(user, "AVRO"))
    assert (e.value.http_status_code, e.value.error_code) == (422, 42201)
    refs = [SchemaReference("compat.Address", addr_s, 1)]
    uid = client.register_schema(user_s, Schema(user, "AVRO", refs))
    got = client.get_schema(uid)
    assert [(r.name, r.subject, r.version) for r in got.references] == \
        [("compat.Address", addr_s, 1)]
    assert client.get_referenced_by(addr_s, 1) == [uid]
    # A referenced version cannot be deleted.
    with pytest.raises(SchemaRegistryError) as e:
        client.delete_version(addr_s, 1)
    assert e.value.error_code == 42206


# ---- errors, deletes, config and mode ---------------------------------------------------------

def test_error_codes(sr):
    client = sr.client()
    missing = subject()

    def code(f):
        with pytest.raises(SchemaRegistryError) as e:
            f()
        return e.value.http_status_code, e.value.error_code

    assert code(lambda: client.get_latest_version(missing)) == (404, 40401)
    assert code(lambda: client.get_versions(missing)) == (404, 40401)
    s = subject()
    client.register_schema(s, Schema(USER_V1, "AVRO"))
    assert code(lambda: client.get_version(s, 7)) == (404, 40402)
    assert code(lambda: client.get_schema(987654321)) == (404, 40403)
    assert code(lambda: client.lookup_schema(s, Schema('"string"', "AVRO"))) == (404, 40403)
    assert code(lambda: client.register_schema(s, Schema('{"type": "nope"}', "AVRO"))) == \
        (422, 42201)
    status, ctype, body = http(sr, "GET", f"/subjects/{s}/versions/abc")
    assert (status, body["error_code"]) == (422, 42202) and ctype == CT
    status, _, body = http(sr, "PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42203)
    status, _, body = http(sr, "PUT", "/mode", {"mode": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42204)
    status, _, body = http(sr, "GET", f"/config/{s}")
    assert (status, body["error_code"]) == (404, 40408)
    status, _, body = http(sr, "GET", f"/mode/{s}")
    assert (status, body["error_code"]) == (404, 40409)
    status, _, body = http(sr, "POST", f"/subjects/{s}/versions", b"{not json")
    assert status == 422 and body["error_code"] == 422
    status, _, body = http(sr, "GET", "/no/such/path")
    assert (status, body["error_code"]) == (404, 404)
    status, _, body = http(sr, "POST", "/subjects/x/versions", b"x" * (5 << 20))
    assert status == 413
    # A good answer carries Confluent's content type.
    status, ctype, body = http(sr, "GET", f"/subjects/{s}/versions/latest")
    assert (status, ctype, body["subject"], body["version"]) == (200, CT, s, 1)
    assert "schemaType" not in body  # AVRO is implied, as in Confluent's answers


def test_hostile_schemas_get_answers(sr):
    """Deeply nested or huge schemas are answered (2xx or Confluent's 4xx), and the
    broker stays up."""
    s = subject()
    deep_avro = '"string"'
    for _ in range(120):
        deep_avro = '{"type": "array", "items": %s}' % deep_avro
    deep_json = "{}"
    for _ in range(126):
        deep_json = '{"type": "object", "properties": {"a": %s}}' % deep_json
    deep_proto = "message A { " * 300 + "}" * 300
    for schema, kind in [(deep_avro, "AVRO"), ('[' * 10000 + ']' * 10000, "AVRO"),
                         (deep_json, "JSON"), (deep_proto, "PROTOBUF")]:
        for path in (f"/subjects/{s}-{kind}/versions", f"/subjects/{s}-{kind}",
                     f"/compatibility/subjects/{s}-{kind}/versions"):
            status, _, body = http(sr, "POST", path, {"schema": schema, "schemaType": kind})
            assert status < 500, (kind, path, status, body)
            if status >= 400:
                assert isinstance(body.get("error_code"), int), body
    # Registering the deep ones twice exercises the compatibility checks on them.
    for schema, kind in [(deep_avro, "AVRO"), (deep_json, "JSON"), (deep_proto, "PROTOBUF")]:
        status, _, _ = http(sr, "POST", f"/subjects/{s}-{kind}/versions",
                            {"schema": schema + " ", "schemaType": kind})
        assert status < 500
    assert http(sr, "GET", "/subjects")[0] == 200


def test_soft_and_hard_deletes(sr):
    client = sr.client()
    s = subject()
    client.set_compatibility(s, "NONE")
    id1 = client.register_schema(s, Schema(USER_V1, "AVRO"))
    client.register_schema(s, Schema('"string"', "AVRO"))
    client.register_schema(s, Schema('"long"', "AVRO"))

    def code(f):
        with pytest.raises(SchemaRegistryError) as e:
            f()
        return e.value.error_code

    assert code(lambda: client.delete_version(s, 1, permanent=True)) == 40407
    assert client.delete_version(s, 1) == 1
    assert code(lambda: client.delete_version(s, 1)) == 40406
    assert client.get_versions(s) == [2, 3]
    status, _, body = http(sr, "GET", f"/subjects/{s}/versions?deleted=true")
    assert body == [1, 2, 3]
    assert code(lambda: client.get_version(s, 1)) == 40402
    status, _, body = http(sr, "GET", f"/subjects/{s}/versions/1?deleted=true")
    assert status == 200 and body["id"] == id1
    # The schema stays readable by id while a soft-deleted version holds it.
    assert client.get_schema(id1).schema_str
    assert client.delete_version(s, 1, permanent=True) == 1
    assert code(lambda: client.delete_subject(s, permanent=True)) == 40405
    assert client.delete_subject(s) == [2, 3]
    assert code(lambda: client.delete_subject(s)) == 40404
    assert s not in client.get_subjects()
    status, _, body = http(sr, "GET", "/subjects?deleted=true")
    assert s in body
    assert client.delete_subject(s, permanent=True) == [2, 3]
    assert code(lambda: client.delete_subject(s)) == 40401
    status, _, body = http(sr, "GET", "/subjects?deleted=true")
    assert s not in body


def test_config_and_mode(sr):
    client = sr.client()
    assert client.get_compatibility() == "BACKWARD"
    s = subject()
    client.register_schema(s, Schema(USER_V1, "AVRO"))
    status, _, body = http(sr, "GET", f"/config/{s}?defaultToGlobal=true")
    assert body == {"compatibilityLevel": "BACKWARD"}
    client.set_compatibility(s, "FULL")
    assert client.get_compatibility(s) == "FULL"
    status, _, body = http(sr, "DELETE", f"/config/{s}")
    assert body == {"compatibilityLevel": "FULL"}
    status, _, body = http(sr, "GET", f"/config/{s}")
    assert body["error_code"] == 40408
    # Read-only subject refuses registrations and deletes.
    assert client.update_mode(s, "READONLY") == "READONLY"
    assert client.get_mode(s) == "READONLY"
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(s, Schema(record("User", [F_ID, F_OPT]), "AVRO"))
    assert e.value.error_code == 42205
    with pytest.raises(SchemaRegistryError) as e:
        client.delete_subject(s)
    assert e.value.error_code == 42205
    assert client.delete_mode(s) == "READONLY"
    assert client.get_global_mode() == "READWRITE"
    # IMPORT needs an empty registry unless forced.
    status, _, body = http(sr, "PUT", "/mode", {"mode": "IMPORT"})
    assert (status, body["error_code"]) == (422, 42205)


def test_import_mode(sr):
    """IMPORT keeps ids and versions given by the client (e.g. copying a registry)."""
    s = subject()
    status, _, body = http(sr, "PUT", f"/mode/{s}", {"mode": "IMPORT"})
    assert (status, body) == (200, {"mode": "IMPORT"})
    schema = record(f"I{uuid.uuid4().hex[:8]}", [F_ID])
    status, _, body = http(sr, "POST", f"/subjects/{s}/versions",
                           {"schema": schema, "id": 777000, "version": 5})
    assert (status, body) == (200, {"id": 777000, "version": 5})
    status, _, body = http(sr, "GET", f"/subjects/{s}/versions/5")
    assert body["id"] == 777000
    # Another schema under an id already taken: 42207.
    status, _, body = http(sr, "POST", f"/subjects/{s}/versions",
                           {"schema": '"string"', "id": 777000, "version": 6})
    assert (status, body["error_code"]) == (422, 42207)
    # Outside IMPORT, a client may not choose the id.
    status, _, body = http(sr, "PUT", f"/mode/{s}", {"mode": "READWRITE"})
    status, _, body = http(sr, "POST", f"/subjects/{s}/versions",
                           {"schema": '"bytes"', "id": 888000})
    assert (status, body["error_code"]) == (422, 42205)
    # New ids continue past the imported one.
    client = sr.client()
    assert client.register_schema(subject(), Schema(record(
        f"J{uuid.uuid4().hex[:8]}", [F_ID]), "AVRO")) > 777000


# ---- persistence -----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_registry_survives_restart(how):
    if EXTERNAL:
        pytest.skip("needs a spate the suite starts")
    b = RegistryBroker()
    b.start()
    try:
        client = b.client()
        ids = {}
        for n in range(5):
            ids[n] = client.register_schema(f"p-{n}", Schema(record(f"P{n}", [F_ID]), "AVRO"))
        client.register_schema("p-0", Schema(record("P0", [F_ID, F_OPT]), "AVRO"))
        client.set_compatibility("p-1", "NONE")
        client.update_mode("p-2", "READONLY")
        client.delete_subject("p-3")
        client.delete_subject("p-4")
        client.delete_subject("p-4", permanent=True)
        if how == "kill":
            b.broker.kill()
        else:
            assert b.broker.stop() == 0
        b.broker.wait_port_closed()
        b.start()
        client = b.client()
        assert sorted(client.get_subjects()) == ["p-0", "p-1", "p-2"]
        assert client.get_versions("p-0") == [1, 2]
        for n in range(3):
            assert client.get_version(f"p-{n}", 1).schema_id == ids[n]
        assert client.get_compatibility("p-1") == "NONE"
        assert client.get_mode("p-2") == "READONLY"
        status, _, body = http(b, "GET", "/subjects?deleted=true")
        assert "p-3" in body and "p-4" not in body
        # New ids continue after the largest ever handed out.
        new = client.register_schema("p-5", Schema(record("P5", [F_ID]), "AVRO"))
        assert new == max(ids.values()) + 2
    finally:
        b.broker.stop()


def test_schemas_topic_is_confluents_format():
    """What Spate writes to _schemas is Confluent's record format, and records in that
    format written by someone else (a Confluent registry, a restore) are read: at the
    next change, and at start."""
    if EXTERNAL:
        pytest.skip("needs a spate the suite starts")
    b = RegistryBroker()
    b.start()
    try:
        client = b.client()
        sid = client.register_schema("own-value", Schema(USER_V1, "AVRO"))
        recs = consume(b.bootstrap, "_schemas", 0, 1)
        assert json.loads(recs[0]["key"]) == \
            {"keytype": "SCHEMA", "subject": "own-value", "version": 1, "magic": 1}
        value = json.loads(recs[0]["value"])
        assert {k: value[k] for k in ("subject", "version", "id", "deleted")} == \
            {"subject": "own-value", "version": 1, "id": sid, "deleted": False}
        assert json.loads(value["schema"]) == json.loads(USER_V1)
        assert recs[0]["key"].startswith(b'{"keytype":"SCHEMA"')
        # Records as Confluent's registry writes them, produced from outside.
        ext = record("Ext", [F_ID])
        foreign = [
            ({"keytype": "NOOP", "magic": 0}, {}),
            ({"keytype": "SCHEMA", "subject": "ext-value", "version": 1, "magic": 1},
             {"subject": "ext-value", "version": 1, "id": 4242, "md5": "00ff",
              "schema": ext, "deleted": False}),
            ({"keytype": "CONFIG", "subject": "ext-value", "magic": 0},
             {"subject": "ext-value", "compatibilityLevel": "FULL"}),
            ({"keytype": "CONTEXT", "tenant": "default", "context": ".", "magic": 0},
             {"tenant": "default", "context": "."}),
        ]
        p = Producer({"bootstrap.servers": b.bootstrap})
        for k, v in foreign:
            p.produce("_schemas", key=json.dumps(k).encode(), value=json.dumps(v).encode())
        assert p.flush(OP_TIMEOUT) == 0
        # The next change reads them first; ids continue past the largest read.
        nid = client.register_schema("own2-value", Schema(record("Own2", [F_ID]), "AVRO"))
        assert nid == 4243
        assert client.get_version("ext-value", 1).schema_id == 4242
        assert client.get_compatibility("ext-value") == "FULL"
        # The foreign spelling of a schema dedups with a client's registration of it.
        assert client.register_schema("ext2-value", Schema(ext, "AVRO")) == 4242
        b.broker.stop()
        b.broker.wait_port_closed()
        b.start()
        client = b.client()
        assert sorted(client.get_subjects()) == \
            ["ext-value", "ext2-value", "own-value", "own2-value"]
        assert client.get_schema(4242).schema_str == ext
    finally:
        b.broker.stop()


@pytest.mark.parametrize("config,partitions,why", [
    ({"cleanup.policy": "delete"}, 1, "is not compacted"),
    ({"cleanup.policy": "compact"}, 2, "has 2 partitions"),
])
def test_bad_schemas_topic_stops_the_start(config, partitions, why):
    """As Confluent's registry: an existing _schemas that is not compacted, or has more
    than one partition, is refused at start with a clear error."""
    if EXTERNAL:
        pytest.skip("needs a spate the suite starts")
    import subprocess
    from conftest import SPATE_BIN
    b = _new_broker()
    b.start()
    try:
        create_topic(b.bootstrap, "_schemas", partitions, config)
    finally:
        assert b.stop() == 0
    b.wait_port_closed()
    r = subprocess.run([str(SPATE_BIN), "--data-dir", str(b.data_dir), "--listen", b.bootstrap,
                        "--cores", "1", "--schema-registry", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"_schemas {why}" in r.stderr, r.stderr[-2000:]


# ---- broker-side validation ------------------------------------------------------------------

def _produce_one(bootstrap, topic, value, key=None):
    reports = []
    p = Producer({"bootstrap.servers": bootstrap, "message.send.max.retries": 0,
                  "message.timeout.ms": 20000})
    p.produce(topic, value=value, key=key, on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(OP_TIMEOUT) == 0
    return reports[0]


def _metric(sr, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{sr.http_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_broker_side_validation(sr, topic_name):
    client = sr.client()
    create_topic(sr.bootstrap, topic_name, 1, {"confluent.value.schema.validation": "true"})
    ctx = SerializationContext(topic_name, MessageField.VALUE)
    ser = AvroSerializer(client, USER_V1)
    good = ser({"id": 1, "name": "a"}, ctx)
    refused_before = _metric(sr, "spate_schema_registry_validation_refused_records_total")
    # No magic byte / schema id: refused, and nothing stored.
    err = _produce_one(sr.bootstrap, topic_name, b"plain bytes, no schema")
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    # Magic byte with an id that does not exist.
    err = _produce_one(sr.bootstrap, topic_name, b"\x00\x00\x0f\x42\x3f" + good[5:])
    assert err is not None and err.code() == KafkaError.INVALID_RECORD
    # An id registered, but under another subject only.
    other_id = client.register_schema(subject(), Schema(record("Other", [F_ID]), "AVRO"))
    err = _produce_one(sr.bootstrap, topic_name, b"\x00" + other_id.to_bytes(4, "big") + b"\x02")
    assert err is not None and err.code() == KafkaError.INVALID_RECORD
    # Registered under <topic>-value: accepted.
    assert _produce_one(sr.bootstrap, topic_name, good) is None
    # A null value (tombstone) carries no schema and passes.
    assert _produce_one(sr.bootstrap, topic_name, None, key=b"k") is None
    got = consume(sr.bootstrap, topic_name, 0, 2)
    assert [m["value"] for m in got] == [good, None]
    assert AvroDeserializer(client)(got[0]["value"], ctx) == {"id": 1, "name": "a"}
    assert _metric(sr, "spate_schema_registry_validation_refused_records_total") == \
        refused_before + 3
    # A soft-deleted subject's ids no longer validate; registering again revives the id.
    client.delete_subject(f"{topic_name}-value")
    err = _produce_one(sr.bootstrap, topic_name, good)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD
    # (Raw HTTP: the client's cache would answer without asking the registry.)
    status, _, body = http(sr, "POST", f"/subjects/{topic_name}-value/versions",
                           {"schema": USER_V1})
    assert (status, body) == (200, {"id": int.from_bytes(good[1:5], "big"), "version": 2})
    assert _produce_one(sr.bootstrap, topic_name, good) is None
    # Turning validation off lets anything in again.
    a = admin(sr.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("confluent.value.schema.validation", "false",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(OP_TIMEOUT)
    assert _produce_one(sr.bootstrap, topic_name, b"anything") is None


def test_key_validation_and_batches(sr, topic_name):
    """Key validation, and a batch with one bad record is refused whole."""
    client = sr.client()
    create_topic(sr.bootstrap, topic_name, 1, {"confluent.key.schema.validation": "true"})
    kid = client.register_schema(f"{topic_name}-key", Schema('"string"', "AVRO"))
    good_key = b"\x00" + kid.to_bytes(4, "big") + b"\x02a"
    reports = []
    p = Producer({"bootstrap.servers": sr.bootstrap, "linger.ms": 200,
                  "message.send.max.retries": 0, "compression.type": "lz4"})
    keys = [good_key, good_key, b"raw-key", good_key]
    # Wait for metadata first, so that the four go out in one batch.
    p.list_topics(topic_name, timeout=10)
    for k in keys:
        p.produce(topic_name, key=k, value=b"v",
                  on_delivery=lambda e, m: reports.append((m.key(), e)))
    assert p.flush(OP_TIMEOUT) == 0
    assert len(reports) == 4
    # The batch holding the raw key is refused whole: whatever shared it failed too.
    assert all(e is not None and e.code() == KafkaError.INVALID_RECORD for _, e in reports), \
        reports
    assert _produce_one(sr.bootstrap, topic_name, b"v", key=good_key) is None
    got = consume(sr.bootstrap, topic_name, 0, 1)
    assert got[0]["key"] == good_key


def test_metrics(sr):
    assert _metric(sr, "spate_schema_registry_schemas") >= 1
    assert _metric(sr, "spate_schema_registry_subjects") >= 1
    with urllib.request.urlopen(f"http://127.0.0.1:{sr.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'spate_schema_registry_requests_total{status="200"}' in text
