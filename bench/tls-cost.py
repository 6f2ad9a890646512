#!/usr/bin/env python3
"""What TLS costs the broker on the produce path (docs/benchmarks.md, "TLS").

Starts target/release/spate (or $SPATE_BIN) with a PLAINTEXT and an SSL listener on one
shard, a throwaway certificate made with the openssl CLI, and produces N records of
1 KiB with librdkafka (confluent-kafka, acks=1, no compression) over each listener in
turn, ROUNDS times. Prints the client's throughput and the broker's CPU time per MB
(user + system, from /proc), which is the number to compare: on a shared machine the
wall-clock rate mostly measures the client.

    python3 bench/tls-cost.py [N] [ROUNDS]
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("SPATE_BIN", str(ROOT / "target" / "release" / "spate"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SIZE = 1024


def free_ports(n):
    ports = set()
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.add(s.getsockname()[1])
    return sorted(ports)


def broker_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(pid, name, conf, topic):
    admin = AdminClient(dict(conf))
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    p = Producer({**conf, "linger.ms": 5, "batch.size": 262144, "acks": "1"})
    payload = os.urandom(SIZE)
    cpu0, t0 = broker_cpu(pid), time.monotonic()
    for _ in range(N):
        while True:
            try:
                p.produce(topic, payload)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    wall, cpu = time.monotonic() - t0, broker_cpu(pid) - cpu0
    mb = N * SIZE / 1e6
    print(f"{name:9s} {mb / wall:7.1f} MB/s   broker CPU {cpu:5.2f} s = {cpu / mb * 1000:5.2f} ms/MB",
          flush=True)


def main():
    work = Path(tempfile.mkdtemp(prefix="tls-cost-", dir=ROOT / "target"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-days", "1", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(work / "b.key"),
                    "-out", str(work / "b.pem")], check=True, capture_output=True)
    plain, tls = free_ports(2)
    (work / "spate.toml").write_text(
        f'listeners = "PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{tls}"\n'
        f'[ssl]\nkeystore_location = "{work / "b.pem"}"\nkey_location = "{work / "b.key"}"\n')
    log = open(work / "broker.log", "wb")
    broker = subprocess.Popen([BIN, "--config", str(work / "spate.toml"), "--data-dir",
                               str(work / "data"), "--cores", "1"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while b"ready to serve" not in (work / "broker.log").read_bytes():
            assert time.monotonic() < deadline and broker.poll() is None, "broker did not start"
            time.sleep(0.1)
        ssl = {"security.protocol": "SSL", "ssl.ca.location": str(work / "b.pem")}
        for r in range(ROUNDS):
            run(broker.pid, "PLAINTEXT", {"bootstrap.servers": f"127.0.0.1:{plain}"}, f"plain-{r}")
            run(broker.pid, "SSL", {"bootstrap.servers": f"127.0.0.1:{tls}", **ssl}, f"tls-{r}")
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
