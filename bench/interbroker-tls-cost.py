#!/usr/bin/env python3
"""What TLS between brokers costs replication (docs/benchmarks.md, "TLS between brokers").

Starts a 3-node cluster of target/release/spate (or $SPATE_BIN) on loopback, each node
a broker and a controller voter with one shard (node 0 pinned to CPU 0, nodes 1 and 2
to CPU 1), whose clients use a PLAINTEXT listener and whose brokers reach each other on
a BROKER listener that is either PLAINTEXT or SSL with client certificates required
(`inter_broker_listener_name`, throwaway certificates from the openssl CLI). A topic of
PARTITIONS partitions, replication factor 3, min.insync.replicas=2, has its leaders
spread over the nodes; librdkafka (confluent-kafka) produces N records of 1 KiB with
acks=all. The two modes alternate, ROUNDS times each, each on a fresh cluster. Prints
the client's throughput and the CPU time (user + system, /proc) of the three brokers
together per MB produced: each record is written once by its leader and fetched by two
followers, and those fetches are what TLS encrypts.

    python3 bench/interbroker-tls-cost.py [N] [ROUNDS]
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
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SIZE = 1024
PARTITIONS = 8
CPUS = [0, 1, 1]
TICK = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def certificates(d):
    """A CA and one broker certificate (IP SAN 127.0.0.1) it signed."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=bench CA", "-days", "2")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=broker")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "san.ext")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_cluster(d, tls):
    ports = free_ports(9)
    client, broker, controller = ports[:3], ports[3:6], ports[6:]
    voters = ",".join(f"{n}@127.0.0.1:{p}" for n, p in enumerate(controller))
    procs = []
    for n in range(3):
        conf = d / f"node-{n}.toml"
        conf.write_text(f"""
listeners = "PLAINTEXT://127.0.0.1:{client[n]},BROKER://127.0.0.1:{broker[n]}"
listener_security_protocol_map = "BROKER:{'SSL' if tls else 'PLAINTEXT'}"
inter_broker_listener_name = "BROKER"
offsets_topic_num_partitions = 1
transaction_state_num_partitions = 1

[ssl]
keystore_location = "{d / 'broker.pem'}"
key_location = "{d / 'broker.key'}"
truststore_location = "{d / 'ca.pem'}"
client_auth = "required"
""")
        log = open(d / f"node-{n}.log", "wb")
        procs.append(subprocess.Popen(
            [BIN, "--config", str(conf), "--node-id", str(n), "--data-dir", str(d / f"data-{n}"),
             "--controller-listen", f"127.0.0.1:{controller[n]}",
             "--controller-quorum-voters", voters, "--cores", "1", "--cpu-list", str(CPUS[n])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    while not all("spate ready to serve" in (d / f"node-{n}.log").read_text(errors="replace")
                  for n in range(3)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            sys.exit(f"the cluster did not start; logs in {d}")
        time.sleep(0.1)
    return procs, f"127.0.0.1:{client[0]}"


def in_sync(admin, topic):
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return md.error is None and len(md.partitions) == PARTITIONS and \
        all(len(p.isrs) == 3 for p in md.partitions.values())


def run(tls):
    d = Path(tempfile.mkdtemp(prefix="spate-ibtls-"))
    try:
        certificates(d)
        procs, bootstrap = start_cluster(d, tls)
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            topic = "ibtls"
            admin.create_topics([NewTopic(topic, PARTITIONS, 3,
                                          config={"min.insync.replicas": "2"})])[topic].result(30)
            deadline = time.monotonic() + 30
            while not in_sync(admin, topic):
                if time.monotonic() > deadline:
                    sys.exit("the topic did not get in sync")
                time.sleep(0.2)
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                          "batch.size": 262144, "queue.buffering.max.kbytes": 262144})
            value = b"x" * SIZE
            before = [cpu_seconds(x.pid) for x in procs]
            t0 = time.monotonic()
            for i in range(N):
                while True:
                    try:
                        p.produce(topic, value, partition=i % PARTITIONS)
                        break
                    except BufferError:
                        p.poll(0.01)
            assert p.flush(120) == 0
            elapsed = time.monotonic() - t0
            used = [cpu_seconds(x.pid) - b for x, b in zip(procs, before)]
            # Gone before the brokers are, so that they do not reconnect meanwhile.
            del p, admin
        finally:
            for x in procs:
                x.terminate()
            for x in procs:
                x.wait(30)
        mb = N * SIZE / 1e6
        return N / elapsed, sum(used) / mb * 1000
    finally:
        shutil.rmtree(d, ignore_errors=True)


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    results = {False: [], True: []}
    for r in range(ROUNDS):
        for tls in (False, True):
            rate, cpu = run(tls)
            results[tls].append((rate, cpu))
            print(f"round {r + 1} {'SSL      ' if tls else 'PLAINTEXT'}: {rate:9.0f} msg/s, "
                  f"brokers {cpu:.2f} ms CPU/MB", flush=True)
    print("\n| inter-broker listener | msg/s (median) | brokers' CPU ms per MB (median, min-max) |")
    print("|---|---|---|")
    for tls in (False, True):
        rs = results[tls]
        cpus = [x[1] for x in rs]
        print(f"| {'SSL (mTLS)' if tls else 'PLAINTEXT'} | {median([x[0] for x in rs]):.0f} | "
              f"{median(cpus):.2f} ({min(cpus):.2f}-{max(cpus):.2f}) |")


if __name__ == "__main__":
    main()
