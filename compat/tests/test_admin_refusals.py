"""Admin APIs of Kafka 4.4's tools that Spate answers with Kafka's refusal or as a no-op:
kafka-delegation-tokens.sh (DelegationTokenCommand; Spate has no delegation tokens and
answers as Kafka without `delegation.token.secret.key`) and kafka-features.sh
(FeatureCommand; UpdateFeatures over features Spate supports at one level each).
Outputs are Kafka 4.4.0's, checked against the reference broker (on its PLAINTEXT
listener); the delegation token refusals on SASL are in test_scram.py."""
import re
import subprocess

import pytest

from conftest import EXTERNAL
from test_kafka_cli import TOOL_TIMEOUT, TOOLS, kafka_libs  # noqa: F401 (fixture)

NOT_ALLOWED = ("org.apache.kafka.common.errors.UnsupportedByAuthenticationException: Delegation "
               "Token requests are not allowed on PLAINTEXT/1-way SSL channels and on delegation "
               "token authenticated channels.")
ALL_FAILED = "The update failed for all features since the following feature had an error: "


def run(libs, cls, *args):
    """One Kafka tool class: (exit code, stdout, stdout and stderr)."""
    cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", TOOLS + cls, *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    return r.returncode, r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("command", [
    ["--create", "--max-life-time-period", "-1", "--renewer-principal", "User:bob"],
    ["--describe"],
    ["--renew", "--hmac", "abcd", "--renew-time-period", "-1"],
    ["--expire", "--hmac", "abcd", "--expiry-time-period", "-1"],
])
def test_delegation_tokens_are_refused_on_plaintext(bootstrap, kafka_libs, tmp_path, command):  # noqa: F811
    config = tmp_path / "client.properties"
    config.write_text("")
    code, _, out = run(kafka_libs, "DelegationTokenCommand", "--bootstrap-server", bootstrap,
                       "--command-config", config, *command)
    assert code == 1, out
    assert NOT_ALLOWED in out


def features(libs, bootstrap, *args):
    return run(libs, "FeatureCommand", "--bootstrap-server", bootstrap, *args)


def test_kafka_features_describe(bootstrap, kafka_libs):  # noqa: F811
    code, out, _ = features(kafka_libs, bootstrap, "describe")
    assert code == 0, out
    described = {m[0]: m[1:] for m in re.findall(
        r"Feature: (\S+)\s+SupportedMinVersion: (\S+)\s+SupportedMaxVersion: (\S+)\s+"
        r"FinalizedVersionLevel: (\S+)\s+Epoch: \d+", out)}
    assert described["transaction.version"][1:] == ("2", "2")
    assert "metadata.version" in described
    if not EXTERNAL:
        # Each feature at the one level Spate runs; Kafka supports ranges (0-2, 3.3-IV3-...).
        assert described == {"metadata.version": ("4.0-IV3",) * 3,
                             "transaction.version": ("2", "2", "2")}


def test_kafka_features_current_level_is_a_no_op(bootstrap, kafka_libs):  # noqa: F811
    for args, said in [
        (["upgrade", "--feature", "transaction.version=2"], "transaction.version was upgraded to 2.\n"),
        (["upgrade", "--feature", "transaction.version=2", "--dry-run"],
         "transaction.version can be upgraded to 2.\n"),
        (["downgrade", "--feature", "transaction.version=2"], "transaction.version was downgraded to 2.\n"),
    ]:
        code, out, everything = features(kafka_libs, bootstrap, *args)
        assert (code, out) == (0, said), everything
    _, described, _ = features(kafka_libs, bootstrap, "describe")
    metadata = re.search(r"Feature: metadata\.version\s.*FinalizedVersionLevel: (\S+)", described)[1]
    code, out, everything = features(kafka_libs, bootstrap, "upgrade", "--metadata", metadata)
    assert code == 0, everything
    # After the tool's warning that `--metadata` is deprecated.
    assert re.search(r"\nmetadata\.version was upgraded to \d+\.\n\Z", out), everything


def test_kafka_features_refuses_unsupported_levels(bootstrap, kafka_libs):  # noqa: F811
    supports = r"Local controller \d+ only supports versions (0|2)-2"
    for args, error in [
        (["upgrade", "--feature", "transaction.version=3"],
         r"Could not upgrade transaction.version to 3\. " + re.escape(ALL_FAILED)
         + r"Invalid update version 3 for feature transaction\.version\. " + supports),
        (["downgrade", "--feature", "transaction.version=3"],
         r"Could not downgrade transaction.version to 3\. " + re.escape(ALL_FAILED)
         + r"Invalid update version 3 for feature transaction\.version\. " + supports),
        (["upgrade", "--feature", "foo.version=1"],
         r"Could not upgrade foo.version to 1\. " + re.escape(ALL_FAILED)
         + r"Invalid update version 1 for feature foo\.version\. "
         r"Local controller \d+ does not support this feature\."),
        (["disable", "--feature", "foo.version"],
         r"Could not disable foo.version\. " + re.escape(ALL_FAILED)
         + r"Invalid update version 0 for feature foo\.version\. Feature foo\.version not found\."),
    ]:
        code, out, everything = features(kafka_libs, bootstrap, *args)
        assert code == 1, everything
        assert re.fullmatch(error + r"\n", out), everything
        assert "1 out of 1 operation(s) failed." in everything
    # One refused update fails the whole request.
    code, out, everything = features(kafka_libs, bootstrap, "upgrade", "--feature",
                                     "transaction.version=2", "--feature", "foo.version=1")
    assert code == 1
    assert "Could not upgrade transaction.version to 2. " + ALL_FAILED in out
    assert "2 out of 2 operation(s) failed." in everything
