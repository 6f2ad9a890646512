"""ACL APIs on a broker without an authorizer (`[authorizer] enable = false`, the
default; test_authorizer.py runs one with it on): Kafka 4.4 answers
DescribeAcls, CreateAcls and DeleteAcls with SECURITY_DISABLED and these messages, and
clients take that to mean ACLs are off (MirrorMaker 2's topic ACL sync calls DescribeAcls
by default). Raw v1 requests, so the exact fields are checked; and librdkafka's admin."""
import struct

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, ResourcePatternType, ResourceType)

from grouputil import RawClient, _nstr, _str
from kafkautil import OP_TIMEOUT, admin

SECURITY_DISABLED = 54
DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31
# resource type / pattern type / operation / permission codes: ANY = 1, TOPIC = 2,
# LITERAL = 3, READ = 3, ALLOW = 3.
ANY_FILTER = (struct.pack(">b", 1) + _nstr(None) + struct.pack(">b", 1) + _nstr(None)
              + _nstr(None) + struct.pack(">bb", 1, 1))


def binding(topic):
    return (struct.pack(">b", 2) + _str(topic) + struct.pack(">b", 3) + _str("User:compat")
            + _str("*") + struct.pack(">bb", 3, 3))


def test_acl_requests_answer_security_disabled(bootstrap, topic_name):
    c = RawClient.to(bootstrap)
    try:
        r = c.call(DESCRIBE_ACLS, 1, ANY_FILTER)
        assert (r.i32(), r.i16(), r.str(), r.i32()) == \
            (0, SECURITY_DISABLED, "No Authorizer is configured on the broker", 0)

        r = c.call(CREATE_ACLS, 1, struct.pack(">i", 2) + binding(topic_name) + binding("x"))
        assert r.i32() == 0
        assert [(r.i16(), r.str()) for _ in range(r.i32())] == \
            [(SECURITY_DISABLED, "No Authorizer is configured.")] * 2

        r = c.call(DELETE_ACLS, 1, struct.pack(">i", 1) + ANY_FILTER)
        assert r.i32() == 0
        assert [(r.i16(), r.str(), r.i32()) for _ in range(r.i32())] == \
            [(SECURITY_DISABLED, "No Authorizer is configured.", 0)]
    finally:
        c.close()


def test_acl_admin_librdkafka(bootstrap, topic_name):
    a = admin(bootstrap)
    any_acl = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    # librdkafka reports no ACLs (it does not surface DescribeAcls' top-level error).
    assert a.describe_acls(any_acl, request_timeout=OP_TIMEOUT).result(timeout=OP_TIMEOUT) == []
    new = AclBinding(ResourceType.TOPIC, topic_name, ResourcePatternType.LITERAL,
                     "User:compat", "*", AclOperation.READ, AclPermissionType.ALLOW)
    for futures in (a.create_acls([new], request_timeout=OP_TIMEOUT),
                    a.delete_acls([any_acl], request_timeout=OP_TIMEOUT)):
        for f in futures.values():
            with pytest.raises(KafkaException) as e:
                f.result(timeout=OP_TIMEOUT)
            assert (e.value.args[0].code(), e.value.args[0].str()) == \
                (SECURITY_DISABLED, "No Authorizer is configured.")
