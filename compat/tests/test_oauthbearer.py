"""SASL/OAUTHBEARER with JWT validation and KIP-368 re-authentication (issue 16;
docs/security.md, "OAUTHBEARER" and "Re-authentication").

The test makes its own identity provider: an RSA and an EC key pair (`cryptography`),
their public keys as the broker's JWK Set, and JWTs signed here (RS256, PS256, ES256).
Two private brokers: one with `connections_max_reauth_ms = 0` (sessions end with their
token only) for librdkafka (confluent-kafka's `oauth_cb`) and kafka-python, and one
with `connections_max_reauth_ms = 2000`, where librdkafka must re-authenticate (KIP-368)
several times while it produces, and a raw client that does not is cut off.
"""
import base64
import json
import os
import shutil
import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import Producer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from kafkautil import consume, kafka_python_round_trip, produce
from test_security import _refused, closed, read_frame, sasl_handshake_frame

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with SASL")

AUDIENCE = "spate-test"
ISSUER = "https://idp.spate.test"
INVALID = '{"status":"invalid_token"}'
REAUTH_MS = 2000


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, size: int) -> str:
    return b64u(n.to_bytes(size, "big"))


class Idp:
    """Signing keys, their JWK Set, and tokens."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        # A key the broker does not know, with a kid it knows.
        self.rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self):
        n = self.rsa.public_key().public_numbers()
        p = self.ec.public_key().public_numbers()
        return {"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": uint(n.n, 256), "e": uint(n.e, 3)},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "use": "sig",
             "x": uint(p.x, 32), "y": uint(p.y, 32)},
        ]}

    def token(self, sub="alice", ttl=300, alg="RS256", kid=None, rogue=False, **claims):
        now = int(time.time())
        body = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + ttl,
                "scope": "produce consume"}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        kid = kid or ("ec-1" if alg == "ES256" else "rsa-1")
        header = {"alg": alg, "typ": "JWT", "kid": kid}
        signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(body).encode())}"
        data = signing_input.encode()
        key = self.rogue if rogue else self.rsa
        if alg == "RS256":
            sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            sig = key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                           hashes.SHA256())
        elif alg == "ES256":
            r, s = decode_dss_signature(self.ec.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == "none":
            sig = b""
        else:
            raise ValueError(alg)
        return f"{signing_input}.{b64u(sig)}"


def start_broker(d, idp, reauth_ms):
    ports = {}
    for name in ("PLAINTEXT", "SASL_PLAINTEXT"):
        while (port := free_port()) in ports.values():
            pass
        ports[name] = port
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps(idp.jwks()))
    listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items())
    conf = d / "spate.toml"
    conf.write_text(f"""
listeners = "{listeners}"
connections_max_reauth_ms = {reauth_ms}

[sasl]
enabled_mechanisms = ["PLAIN", "OAUTHBEARER"]

[sasl.plain.users]
alice = "alice-secret"
bob = "bob-secret"

[sasl.oauthbearer]
jwks_file = "{jwks}"
expected_audience = ["{AUDIENCE}", "other"]
expected_issuer = "{ISSUER}"
""")
    broker = SpateBroker(RUNS / f"spate-oauth-{uuid.uuid4().hex[:10]}", ports["PLAINTEXT"],
                         ["--config", str(conf)], listen_flag=False)
    # Re-authentications are logged at debug.
    old = os.environ.get("SPATE_LOG")
    os.environ["SPATE_LOG"] = "info,spate::security=debug"
    try:
        broker.start()
    finally:
        if old is None:
            os.environ.pop("SPATE_LOG")
        else:
            os.environ["SPATE_LOG"] = old
    return broker, ports


@pytest.fixture(scope="module")
def idp():
    return Idp()


@pytest.fixture(scope="module")
def oauth(tmp_path_factory, idp):
    RUNS.mkdir(parents=True, exist_ok=True)
    broker, ports = start_broker(tmp_path_factory.mktemp("oauth"), idp, 0)
    yield broker, ports
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def reauth(tmp_path_factory, idp):
    RUNS.mkdir(parents=True, exist_ok=True)
    broker, ports = start_broker(tmp_path_factory.mktemp("reauth"), idp, REAUTH_MS)
    yield broker, ports
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def addr(ports, name="SASL_PLAINTEXT"):
    return f"127.0.0.1:{ports[name]}"


def oauth_conf(make_token, tokens=None):
    """librdkafka settings with an oauth_cb that returns make_token()'s JWT; the token
    lifetime told to librdkafka is always an hour (a refused token must reach the
    broker, whatever its exp says)."""
    def cb(_config):
        t = make_token()
        if tokens is not None:
            tokens.append(t)
        return t, time.time() + 3600
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER",
            "oauth_cb": cb}


def records(tag, n=10):
    return [{"key": f"k{i}".encode(), "value": f"{tag}-{i}".encode()} for i in range(n)]


# ---- librdkafka ---------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_librdkafka_produces_and_consumes(oauth, idp, alg):
    broker, ports = oauth
    conf = oauth_conf(lambda: idp.token(alg=alg))
    topic = f"oauth-{alg.lower()}-{uuid.uuid4().hex[:6]}"
    sent = records(alg)
    reports = produce(addr(ports), topic, sent, conf=conf)
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, i) for i in range(len(sent))]
    got = consume(addr(ports), topic, 0, len(sent), conf=conf)
    assert [(r["key"], r["value"]) for r in got] == [(r["key"], r["value"]) for r in sent]


def test_the_principal_is_the_subject(oauth, idp):
    """The broker logs who authenticated (debug): User:<sub>."""
    broker, ports = oauth
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": addr(ports), **oauth_conf(lambda: idp.token(sub="svc-42"))})
    a.list_topics(timeout=15)
    deadline = time.monotonic() + 5
    while "user=svc-42 mechanism=\"OAUTHBEARER\"" not in broker.log_tail(400) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "user=svc-42 mechanism=\"OAUTHBEARER\"" in broker.log_tail(400)


@pytest.mark.parametrize("case", ["expired", "bad-signature", "audience", "issuer", "no-sub",
                                  "alg-none", "unknown-kid"])
def test_librdkafka_refused_tokens(oauth, idp, case):
    """Every refusal reaches the client as Kafka's: SASL_AUTHENTICATION_FAILED with
    RFC 7628's {"status":"invalid_token"}; the reason is in the broker's log."""
    broker, ports = oauth
    make = {
        "expired": lambda: idp.token(ttl=-600),
        "bad-signature": lambda: idp.token(rogue=True),
        "audience": lambda: idp.token(aud="kafka"),
        "issuer": lambda: idp.token(iss="https://evil.test"),
        "no-sub": lambda: idp.token(sub=None),
        "alg-none": lambda: idp.token(alg="none"),
        "unknown-kid": lambda: idp.token(kid="rsa-9"),
    }[case]
    errors = _refused({"bootstrap.servers": addr(ports), **oauth_conf(make)})
    text = " | ".join(str(e) for e in errors)
    assert "invalid_token" in text, text
    assert "Authentication" in text or "authentication" in text, text
    reason = {"expired": "expired", "bad-signature": "signature", "audience": "audience",
              "issuer": "issuer", "no-sub": "no sub claim", "alg-none": "malformed token",
              "unknown-kid": "no verification key"}[case]
    assert "OAUTHBEARER token refused" in broker.log_tail(300)
    assert reason in broker.log_tail(300), broker.log_tail(40)


# ---- kafka-python -------------------------------------------------------------------

def test_kafka_python_oauthbearer(oauth, idp):
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        def token(self):
            return idp.token(sub="kpy", alg="ES256")

    broker, ports = oauth
    common = {"bootstrap_servers": addr(ports), "security_protocol": "SASL_PLAINTEXT",
              "sasl_mechanism": "OAUTHBEARER", "sasl_oauth_token_provider": Provider()}
    topic = f"oauth-kpy-{uuid.uuid4().hex[:6]}"
    kafka_python_round_trip(common, topic)


# ---- raw frames ---------------------------------------------------------------------

def authenticate_frame(token: bytes, version=1, correlation=8):
    body = struct.pack(">hhih", 36, version, correlation, -1) + struct.pack(">i", len(token)) + token
    return struct.pack(">i", len(body)) + body


def authenticate_response(frame):
    """SaslAuthenticate v1: (correlation, error, message, auth_bytes, session_lifetime_ms)."""
    correlation, error, n = struct.unpack(">ihh", frame[:8])
    pos = 8
    message = None
    if n >= 0:
        message = frame[pos:pos + n].decode()
        pos += n
    (m,) = struct.unpack(">i", frame[pos:pos + 4])
    pos += 4
    auth = frame[pos:pos + max(m, 0)]
    pos += max(m, 0)
    (lifetime,) = struct.unpack(">q", frame[pos:pos + 8])
    return correlation, error, message, auth, lifetime


def metadata_frame(correlation=9):
    body = struct.pack(">hhih", 3, 1, correlation, -1) + struct.pack(">i", 0)
    return struct.pack(">i", len(body)) + body


def bearer(token):
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


def login(s, mechanism, token):
    s.sendall(sasl_handshake_frame(mechanism))
    assert struct.unpack(">ih", read_frame(s)[:6]) == (7, 0)
    s.sendall(authenticate_frame(token))
    return authenticate_response(read_frame(s))


def test_raw_refusal_is_rfc7628s(oauth, idp):
    """The error challenge, then the client's \\x01, then the failure and a close."""
    broker, ports = oauth
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
        r = login(s, "OAUTHBEARER", bearer(idp.token(ttl=-600)))
        assert r[:4] == (8, 0, None, INVALID.encode())
        s.sendall(authenticate_frame(b"\x01", correlation=9))
        assert authenticate_response(read_frame(s))[:3] == (9, 58, INVALID)
        assert closed(s)
    # A malformed message, and one too large: Kafka's generic message at once.
    generic = ("Authentication failed during authentication due to invalid credentials "
               "with SASL mechanism OAUTHBEARER")
    for message in (b"n,,\x01auth=Basic abc\x01\x01", bearer("a" * 70000)):
        with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
            assert login(s, "OAUTHBEARER", message)[1:3] == (58, generic)
            assert closed(s)


def test_raw_session_lifetime_is_the_tokens(oauth, idp):
    """connections_max_reauth_ms = 0: an OAUTHBEARER session still ends with its token
    (Kafka's SaslServerAuthenticator); a PLAIN one does not end."""
    broker, ports = oauth
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
        r = login(s, "OAUTHBEARER", bearer(idp.token(ttl=600)))
        assert r[1] == 0 and 590_000 <= r[4] <= 600_000, r
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
        assert login(s, "PLAIN", b"\0alice\0alice-secret")[1:] == (0, None, b"", 0)


def test_raw_client_that_does_not_reauthenticate_is_closed(reauth, idp):
    broker, ports = reauth
    for mechanism, token in (("PLAIN", b"\0alice\0alice-secret"),
                             ("OAUTHBEARER", bearer(idp.token(ttl=600)))):
        with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
            r = login(s, mechanism, token)
            assert (r[1], r[4]) == (0, REAUTH_MS), r
            # Within the session: served.
            s.sendall(metadata_frame())
            assert struct.unpack(">i", read_frame(s)[:4]) == (9,)
            time.sleep(REAUTH_MS / 1000 + 0.5)
            s.sendall(metadata_frame())
            assert closed(s)
    assert "SASL session expired" in broker.log_tail(200)
    # A token that expires before connections_max_reauth_ms: its lifetime wins.
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
        r = login(s, "OAUTHBEARER", bearer(idp.token(ttl=1)))
        assert r[1] == 0 and 0 <= r[4] <= 1000, r


def test_raw_reauthentication(reauth, idp):
    """Re-authenticating before the end moves it; the principal and the mechanism must
    not change (Kafka's messages), else the connection closes."""
    broker, ports = reauth
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
        assert login(s, "OAUTHBEARER", bearer(idp.token(ttl=600)))[1] == 0
        for _ in range(3):
            time.sleep(1.2)
            r = login(s, "OAUTHBEARER", bearer(idp.token(ttl=600, alg="ES256")))
            assert (r[1], r[4]) == (0, REAUTH_MS), r
            s.sendall(metadata_frame())
            assert struct.unpack(">i", read_frame(s)[:4]) == (9,)
        # 3.6 s after the first authentication: past the first session's end.
        time.sleep(1.2)
        r = login(s, "OAUTHBEARER", bearer(idp.token(sub="mallory")))
        assert r[1:3] == (58, "Cannot change principals during re-authentication "
                              "from User.alice: User.mallory"), r
        assert closed(s)
    with socket.create_connection(("127.0.0.1", ports["SASL_PLAINTEXT"]), timeout=10) as s:
        assert login(s, "PLAIN", b"\0alice\0alice-secret")[1] == 0
        time.sleep(1.1)
        r = login(s, "OAUTHBEARER", bearer(idp.token()))
        assert r[1:3] == (58, "SASL mechanism 'OAUTHBEARER' requested by client is not "
                              "supported for re-authentication of mechanism 'PLAIN'"), r
        assert closed(s)


# ---- librdkafka re-authenticates (KIP-368) ------------------------------------------

def test_librdkafka_reauthenticates_while_producing(reauth, idp):
    """Produce for more than three session lifetimes with idempotence: every record is
    delivered once, in order, with no error, and librdkafka re-authenticated on its
    connections instead of being cut off."""
    broker, ports = reauth
    log_before = len(broker.log_path.read_text(errors="replace"))
    tokens = []
    conf = oauth_conf(lambda: idp.token(sub="producer", ttl=600), tokens)
    errors = []
    topic = f"oauth-reauth-{uuid.uuid4().hex[:6]}"
    p = Producer({"bootstrap.servers": addr(ports), "enable.idempotence": True,
                  "linger.ms": 5, "error_cb": errors.append, **conf})
    reports = []
    sent = []
    deadline = time.monotonic() + 3.5 * REAUTH_MS / 1000
    i = 0
    while time.monotonic() < deadline:
        value = f"r-{i}".encode()
        p.produce(topic, value=value, partition=0,
                  on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.value())))
        sent.append(value)
        i += 1
        p.poll(0.05)
    assert p.flush(30) == 0
    assert errors == [], errors
    assert [e for e, _, _ in reports if e is not None] == []
    assert [(o, v) for _, o, v in reports] == list(enumerate(sent))
    got = consume(addr(ports), topic, 0, len(sent),
                  conf=oauth_conf(lambda: idp.token(sub="consumer", ttl=600)))
    assert [r["value"] for r in got] == sent
    log = broker.log_path.read_text(errors="replace")[log_before:]
    assert log.count("SASL re-authentication begins") >= 3, log[-3000:]
    assert "SASL session expired" not in log, log[-3000:]
