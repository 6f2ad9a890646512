#!/usr/bin/env python3
"""A Jepsen-style nemesis test of a 3-node cluster (Spate, or Apache Kafka 4.4 with
--target kafka), bounded and on private network namespaces (netns.py).

Idempotent acks=all producers and a consumer group run while a nemesis, every few
seconds, kills a node with SIGKILL (a random one, a partition's leader, the active
controller) and restarts it, pauses one with SIGSTOP/SIGCONT, or cuts one node (or one
pair) off the others with dropped packets. At most one fault is active at a time. Then
everything is healed and a checker reads every partition from offset 0 and compares the
replicas' segment files batch for batch. See docs/replication.md.
"""
import argparse
import hashlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import netns  # noqa: E402 (same directory)
from clusters import KafkaCluster, SpateCluster, active_controller

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOPIC = "nemesis"
PARTITIONS = 6
# librdkafka logs every disconnection (hundreds under the nemesis): only critical ones.
QUIET_LOGS = 2


class Timeline:
    def __init__(self, path):
        self.t0 = time.monotonic()
        self.f = open(path, "a", buffering=1)
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, msg, kind=None, **fields):
        el = time.monotonic() - self.t0
        wall = time.strftime("%H:%M:%S", time.gmtime())
        line = f"[+{el:7.1f}s {wall}Z] {msg}"
        with self.lock:
            print(line, flush=True)
            self.f.write(line + "\n")
            if kind:
                self.events.append(dict(t=round(el, 1), wall=wall, kind=kind, msg=msg, **fields))


# ------------------------------------------------------------------------------------
# Workload
def client_logger(path):
    """librdkafka's idempotence debugging (debug=eos: producer ids, epoch bumps and
    their reasons) of every producer, to a file of the run."""
    logger = logging.getLogger("librdkafka")
    if not logger.handlers:
        h = logging.FileHandler(path)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


class ProducerWorker(threading.Thread):
    client_log = None

    def __init__(self, k, bootstrap, rate, stop, log):
        super().__init__(daemon=True, name=f"producer-{k}")
        self.k, self.bootstrap, self.rate, self.stop, self.log = k, bootstrap, rate, stop, log
        self.acked = []          # (partition, offset, value)
        self.failed = Counter()  # error name -> count
        self.attempted = 0
        self.outstanding = 0     # still queued when the producer was closed
        self.generation = 0
        self.fatal = None
        self.identities = []
        self.crashed = None
        self.no_offset_logged = 0

    def _new_producer(self):
        from confluent_kafka import Producer
        self.generation += 1
        self.identity = f"p{self.k}g{self.generation}"
        self.identities.append(self.identity)
        self.seq = 0
        self.fatal = None

        def on_error(err):
            if err.fatal():
                self.fatal = err

        return Producer({
            "bootstrap.servers": self.bootstrap, "client.id": self.identity,
            "enable.idempotence": True, "acks": "all", "linger.ms": 10,
            # Never time a record out: with a timeout librdkafka drains and bumps
            # the producer epoch and re-sends other partitions' possibly persisted
            # records under new sequence numbers, i.e. duplicates made by the client
            # (seen against Kafka 4.4 with 30 s; librdkafka issue 4953). Every fault is
            # healed within seconds, and the final flush is bounded.
            "message.timeout.ms": 0, "request.timeout.ms": 10000,
            "retry.backoff.ms": 100, "retry.backoff.max.ms": 1000,
            "queue.buffering.max.messages": 20000,
            "socket.connection.setup.timeout.ms": 5000,
            "topic.metadata.refresh.interval.ms": 5000, "error_cb": on_error,
            "log_level": 7, "debug": "eos", "logger": ProducerWorker.client_log,
        })

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked.append((msg.partition(), msg.offset(), msg.value().decode()))
            if msg.offset() is None and self.no_offset_logged < 20:
                self.no_offset_logged += 1
                self.log(f"delivery report without an offset: {TOPIC}-{msg.partition()} "
                         f"{msg.value().decode()}")
        else:
            self.failed[err.name()] += 1
            if err.fatal():
                self.fatal = err

    def _close(self, p):
        self.outstanding += p.flush(60)

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported, and fails the run
            self.crashed = f"{type(e).__name__}: {e}"
            self.log(f"ERROR: producer {self.k} died: {self.crashed}")

    def _run(self):
        p = self._new_producer()
        interval = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            if self.fatal is not None:
                self.log(f"producer {self.identity}: fatal error {self.fatal}; a new producer replaces it")
                self._close(p)
                p = self._new_producer()
            value = f"{self.identity}:{self.seq}"
            try:
                p.produce(TOPIC, value=value.encode(), partition=self.seq % PARTITIONS,
                          on_delivery=self._on_delivery)
                self.seq += 1
                self.attempted += 1
            except BufferError:
                self.failed["local queue full (not sent)"] += 1
            except Exception as e:  # noqa: BLE001 - e.g. a fatal state: not acknowledged
                self.failed[type(e).__name__] += 1
            p.poll(0)
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                p.poll(delay)
            else:
                nxt = time.monotonic()
        self._close(p)


class ConsumerWorker(threading.Thread):
    def __init__(self, k, bootstrap, stop):
        super().__init__(daemon=True, name=f"consumer-{k}")
        self.k, self.bootstrap, self.stop = k, bootstrap, stop
        self.seen = {}  # (partition, offset) -> value
        self.conflicts = []  # same offset read twice with different values
        self.errors = Counter()
        self.count = 0
        self.crashed = None

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported, and fails the run
            self.crashed = f"{type(e).__name__}: {e}"

    def _run(self):
        from confluent_kafka import Consumer
        c = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": "nemesis-readers",
            "client.id": f"c{self.k}", "auto.offset.reset": "earliest",
            "enable.auto.commit": True, "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 2000, "isolation.level": "read_uncommitted",
            "max.poll.interval.ms": 60000, "socket.connection.setup.timeout.ms": 5000,
            "topic.metadata.refresh.interval.ms": 5000, "log_level": QUIET_LOGS,
        })
        c.subscribe([TOPIC])
        try:
            while not self.stop.is_set():
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error() is not None:
                    self.errors[m.error().name()] += 1
                    continue
                key = (m.partition(), m.offset())
                v = m.value().decode()
                old = self.seen.get(key)
                if old is not None and old != v:
                    self.conflicts.append((key[0], key[1], old, v))
                self.seen[key] = v
                self.count += 1
        finally:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


# ------------------------------------------------------------------------------------
# Nemesis
class Nemesis:
    def __init__(self, cluster, net, admin, rng, log, args):
        self.cluster, self.net, self.admin, self.rng, self.log = cluster, net, admin, rng, log
        self.args = args
        self.active = None  # (undo, description)
        self.counts = Counter()
        self.crashes = []

    def hosts(self):
        return [net_ip for net_ip in (self.net.ip(i) for i in range(3))]

    def leader_of(self, p):
        try:
            md = self.admin.list_topics(TOPIC, timeout=5)
            leader = md.topics[TOPIC].partitions[p].leader
            return leader if leader >= 0 else None
        except Exception:  # noqa: BLE001
            return None

    def controller(self):
        live = [self.net.ip(n.i) for n in self.cluster.nodes if n.alive() and not n.paused]
        return active_controller(live)

    def check_crashes(self):
        """A node that exited without the nemesis killing it: recorded, then restarted."""
        for n in self.cluster.nodes:
            if not n.expected_down and n.proc is not None and n.proc.poll() is not None:
                code = n.proc.returncode
                self.crashes.append(dict(node=n.i, code=code, t=round(time.monotonic() - self.log.t0, 1)))
                self.log(f"ANOMALY: node {n.i} exited by itself (code {code}); restarting it",
                         kind="crash", node=n.i, code=code)
                n.start()

    def sleep(self, seconds, deadline=None):
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now >= end or (deadline is not None and now >= deadline):
                return
            self.check_crashes()
            time.sleep(min(0.25, end - now))

    def pick_node(self, how):
        """(node, why)"""
        if how == "leader":
            p = self.rng.randrange(PARTITIONS)
            leader = self.leader_of(p)
            if leader is not None:
                return leader, f"leader of {TOPIC}-{p}"
            return self.rng.randrange(3), f"random (no leader known for {TOPIC}-{p})"
        if how == "controller":
            c = self.controller()
            if c is not None:
                return c, "active controller"
            return self.rng.randrange(3), "random (active controller unknown)"
        return self.rng.randrange(3), "random"

    def step(self, deadline):
        ops = ["kill", "kill-leader", "kill-controller", "pause", "pause", "isolate",
               "isolate", "cut-pair"]
        op = self.rng.choice(ops)
        if op.startswith("kill"):
            how = {"kill": "random", "kill-leader": "leader", "kill-controller": "controller"}[op]
            node, why = self.pick_node(how)
            n = self.cluster.nodes[node]
            down = round(self.rng.uniform(2, 8), 1)
            pid = n.pid
            n.kill()
            self.counts[op] += 1
            self.log(f"kill -9 node {node} ({why}, pid {pid}); restart in {down}s",
                     kind=op, node=node, why=why, hold=down)
            self.active = (lambda: self._restart(node), f"restart node {node}")
            self.sleep(down, deadline + 30)
        elif op == "pause":
            node, why = self.pick_node(self.rng.choice(["random", "leader", "controller"]))
            n = self.cluster.nodes[node]
            long = self.rng.random() < 0.5
            hold = round(self.rng.uniform(4, 10) if long else self.rng.uniform(1, 2.5), 1)
            if not n.alive():
                return
            n.pause()
            kind = "pause-long" if long else "pause-short"
            self.counts[kind] += 1
            self.log(f"SIGSTOP node {node} ({why}) for {hold}s"
                     f" ({'longer' if long else 'shorter'} than the 3 s session)",
                     kind=kind, node=node, why=why, hold=hold)
            self.active = (lambda: self._cont(node), f"SIGCONT node {node}")
            self.sleep(hold, deadline + 30)
        elif op == "isolate":
            node, why = self.pick_node(self.rng.choice(["random", "leader", "controller"]))
            hold = round(self.rng.uniform(4, 15), 1)
            self.net.isolate(node)
            self.counts[op] += 1
            self.log(f"cut node {node} ({why}) off both other nodes for {hold}s (clients still reach it)",
                     kind=op, node=node, why=why, hold=hold)
            self.active = (self._heal_net, "heal the network")
            self.sleep(hold, deadline + 30)
        else:
            a, b = self.rng.sample(range(3), 2)
            hold = round(self.rng.uniform(4, 15), 1)
            self.net.cut(a, b)
            self.counts[op] += 1
            self.log(f"cut the link between nodes {a} and {b} for {hold}s", kind=op,
                     node=[a, b], hold=hold)
            self.active = (self._heal_net, "heal the network")
            self.sleep(hold, deadline + 30)
        self.undo()

    def undo(self):
        if self.active is not None:
            action, _ = self.active
            self.active = None
            action()

    def _restart(self, node):
        self.cluster.nodes[node].start()
        self.log(f"restart node {node} (pid {self.cluster.nodes[node].pid})")

    def _cont(self, node):
        self.cluster.nodes[node].cont()
        self.log(f"SIGCONT node {node}")

    def _heal_net(self):
        self.net.heal()
        self.log("heal the network")

    def run(self, duration):
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            self.sleep(round(self.rng.uniform(2, 6), 1), deadline)
            if time.monotonic() >= deadline:
                break
            self.step(deadline)

    def heal_all(self):
        self.undo()
        self.net.heal()
        for n in self.cluster.nodes:
            if n.paused:
                n.cont()
            if not n.alive():
                n.start()
        self.log("healed: every node runs, no link is cut", kind="heal")


# ------------------------------------------------------------------------------------
# Checker
def isr_state(admin):
    md = admin.list_topics(TOPIC, timeout=10)
    return {p.id: (p.leader, sorted(p.isrs), sorted(p.replicas))
            for p in md.topics[TOPIC].partitions.values()}


def wait_brokers(admin, count, timeout):
    """Wait until the cluster's metadata lists `count` brokers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            brokers = admin.list_topics(timeout=5).brokers
            if len(brokers) >= count:
                return
        except Exception:  # noqa: BLE001 - not answering yet
            brokers = {}
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(brokers)} of {count} brokers registered after {timeout}s")
        time.sleep(0.5)


def wait_full_isr(admin, log, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            state = isr_state(admin)
            last = state
            if len(state) == PARTITIONS and all(l >= 0 and len(isr) == 3 for l, isr, _ in state.values()):
                return True, state
        except Exception as e:  # noqa: BLE001
            last = str(e)
        time.sleep(1)
    log(f"the ISRs did not all become full within {timeout}s: {last}")
    return False, last


def read_partitions(bootstrap, log, timeout=90):
    """{partition: [(offset, value)]} read with a fresh consumer from offset 0 to the high
    watermark, and {partition: (low, high)}."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"nemesis-check-{os.getpid()}",
                  "enable.auto.commit": False, "isolation.level": "read_uncommitted",
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    out, marks, incomplete = {}, {}, []
    try:
        for p in range(PARTITIONS):
            low, high = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=15)
            marks[p] = (low, high)
            rows = []
            if high > 0:
                c.assign([TopicPartition(TOPIC, p, 0)])
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    m = c.poll(0.5)
                    if m is None:
                        continue
                    if m.error() is not None:
                        if m.error().code() == -191:  # _PARTITION_EOF
                            if rows and rows[-1][0] >= high - 1:
                                break
                            continue
                        log(f"checker read of {TOPIC}-{p}: {m.error()}")
                        continue
                    rows.append((m.offset(), m.value().decode()))
                    if m.offset() >= high - 1:
                        break
                if not rows or rows[-1][0] < high - 1:
                    incomplete.append(p)
                c.unassign()
            out[p] = rows
    finally:
        c.close()
    return out, marks, incomplete


def segment_batches(pdir):
    """[(base_offset, last_offset, leader_epoch, sha256 of the batch bytes)] of the
    concatenated *.log segments of a partition directory, and notes about its tails."""
    batches, notes = [], []
    for seg in sorted(pdir.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            base = int.from_bytes(data[pos:pos + 8], "big", signed=True)
            length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
            if length == 0 and base == 0 and not any(data[pos:pos + 61]):
                if any(data[pos:]):
                    notes.append(f"{seg.name}: zeros at {pos} followed by data")
                break  # preallocated, never-written tail
            if length < 49 or pos + 12 + length > len(data):
                notes.append(f"{seg.name}: torn batch at {pos} (length {length}, file {len(data)})")
                break
            raw = data[pos:pos + 12 + length]
            epoch = int.from_bytes(raw[12:16], "big", signed=True)
            last_delta = int.from_bytes(raw[23:27], "big", signed=True)
            batches.append((base, base + last_delta, epoch, hashlib.sha256(raw).hexdigest()[:16]))
            pos += 12 + length
    return batches, notes


def compare_replicas(cluster):
    """Partitions whose three replicas' logs differ, with the first differing batch."""
    mismatches, notes, sizes = [], [], {}
    for p in range(PARTITIONS):
        logs = []
        for i in range(3):
            b, n = segment_batches(cluster.partition_dir(i, TOPIC, p))
            logs.append(b)
            notes += [f"node {i} {TOPIC}-{p} {x}" for x in n]
        sizes[p] = [len(x) for x in logs]
        if not (logs[0] == logs[1] == logs[2]):
            k = 0
            while all(k < len(x) for x in logs) and logs[0][k] == logs[1][k] == logs[2][k]:
                k += 1
            mismatches.append(dict(partition=p, batches=[len(x) for x in logs], first_difference=k,
                                   at=[x[k] if k < len(x) else None for x in logs]))
    return mismatches, notes, sizes


def check(acked, log_rows, consumed, incomplete):
    """The verdict's numbers, and examples of every anomaly."""
    at = {}  # (p, offset) -> value
    where = defaultdict(list)  # value -> [(p, offset)]
    for p, rows in log_rows.items():
        for off, v in rows:
            at[(p, off)] = v
            where[v].append((p, off))
    acked_values = set()
    lost, misplaced = [], []
    no_offset = []  # acknowledged without an offset (the delivery report had none)
    for p, off, v in acked:
        acked_values.add(v)
        if off is None:
            no_offset.append(dict(partition=p, value=v, found_at=where.get(v)))
            if not any(q == p for q, _ in where.get(v, [])):
                lost.append(dict(partition=p, offset=None, value=v, found_there=None,
                                 found_at=where.get(v)))
            continue
        if at.get((p, off)) != v:
            (misplaced if where.get(v) else lost).append(
                dict(partition=p, offset=off, value=v, found_there=at.get((p, off)),
                     found_at=where.get(v)))
    duplicates = [dict(value=v, at=locs) for v, locs in where.items() if len(locs) > 1]
    order = []
    for p, rows in log_rows.items():
        last = {}
        for off, v in rows:
            ident, _, seq = v.rpartition(":")
            seq = int(seq)
            if ident in last and seq <= last[ident][1]:
                order.append(dict(partition=p, offset=off, value=v,
                                  after=f"{ident}:{last[ident][1]} at {last[ident][0]}"))
            last[ident] = (off, seq)
    unacked_present = sum(1 for v in where if v not in acked_values)
    consumed_absent = [dict(partition=p, offset=o, value=v, final=at.get((p, o)))
                       for (p, o), v in consumed.items() if at.get((p, o)) != v]
    return dict(acked=len(acked), log_records=len(at), lost=lost, misplaced=misplaced,
                no_offset=no_offset,
                duplicates=duplicates, order=order, unacked_present=unacked_present,
                consumed_absent=consumed_absent, incomplete=incomplete)


# ------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", choices=["spate", "kafka"], default="spate")
    ap.add_argument("--duration", type=int, default=300, help="seconds of faults (default 300)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=70.0, help="records/s per producer")
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--spate-bin", default=os.environ.get("SPATE_BIN", str(ROOT / "target/release/spate")))
    ap.add_argument("--kafka-libs", default=str(ROOT / "target/compat/kafka-libs"))
    ap.add_argument("--out", default=None, help="run directory (default target/nemesis/<target>-<time>-<seed>)")
    ap.add_argument("--isr-timeout", type=int, default=180)
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("the nemesis test creates network namespaces: run it as root")
    if args.target == "spate" and not os.access(args.spate_bin, os.X_OK):
        sys.exit(f"no broker binary at {args.spate_bin} (build it, or set SPATE_BIN / --spate-bin)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    run_dir = Path(args.out) if args.out else (
        ROOT / "target" / "nemesis" / f"{args.target}-{time.strftime('%Y%m%dT%H%M%S')}-{seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = Timeline(run_dir / "timeline.log")
    log(f"nemesis test against {args.target}: seed {seed}, {args.duration}s of faults, run dir {run_dir}")

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    net = netns.Net(log=log)
    cluster = None
    stop_produce, stop_consume = threading.Event(), threading.Event()
    result = dict(target=args.target, seed=seed, duration=args.duration, run_dir=str(run_dir),
                  passed=False)
    started = time.monotonic()
    try:
        net.setup()
        log(f"network: namespaces {net.hub} (bridge), {', '.join(net.node_ns)}, {net.client_ns}; subnet {net.subnet}")
        log(net.probe())
        if args.target == "spate":
            cluster = SpateCluster(net, run_dir, Path(args.spate_bin).resolve())
        else:
            cluster = KafkaCluster(net, run_dir, args.kafka_libs)
        net.enter_client_namespace()  # before any thread starts
        cluster.start()
        bootstrap = cluster.bootstrap()
        log(f"cluster ready: {bootstrap}")

        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": QUIET_LOGS})
        # Listening is not registered: RF 3 needs all three brokers in the metadata.
        wait_brokers(admin, 3, 60)
        fut = admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={
            "min.insync.replicas": "2", "unclean.leader.election.enable": "false"})])
        fut[TOPIC].result(timeout=60)
        ok, state = wait_full_isr(admin, log, 60)
        if not ok:
            raise RuntimeError(f"topic {TOPIC} never got full ISRs: {state}")
        log(f"topic {TOPIC}: {PARTITIONS} partitions, RF 3, min.insync.replicas 2; leaders "
            + ", ".join(f"p{p}->{l}" for p, (l, _, _) in sorted(state.items())))

        ProducerWorker.client_log = client_logger(run_dir / "producers-eos.log")
        producers = [ProducerWorker(k, bootstrap, args.rate, stop_produce, log) for k in range(args.producers)]
        consumers = [ConsumerWorker(k, bootstrap, stop_consume) for k in range(args.consumers)]
        for w in producers + consumers:
            w.start()
        time.sleep(5)

        nem = Nemesis(cluster, net, admin, rng, log, args)
        log("nemesis starts", kind="start")
        try:
            nem.run(args.duration)
        finally:
            nem.heal_all()
        log("quiet: producers go on for 15 s after the heal")
        nem.sleep(15)
        stop_produce.set()
        for w in producers:
            w.join(timeout=60)
        log("producers stopped; waiting for every partition's ISR to be full again")
        isr_ok, isr_final = wait_full_isr(admin, log, args.isr_timeout)
        nem.check_crashes()
        log(f"ISRs full: {isr_ok}; consumers catch up for 10 s")
        time.sleep(10)
        stop_consume.set()
        for w in consumers:
            w.join(timeout=30)

        log("checker: reading every partition from offset 0")
        rows, marks, incomplete = read_partitions(bootstrap, log)
        acked = [a for w in producers for a in w.acked]
        consumed = {}
        conflicts = []
        for w in consumers:
            consumed.update(w.seen)
            conflicts += w.conflicts
        with open(run_dir / "acked.tsv", "w") as f:  # evidence: partition, offset, value
            f.writelines(f"{p}\t{o}\t{v}\n" for p, o, v in
                         sorted(acked, key=lambda a: (a[0], -1 if a[1] is None else a[1], a[2])))
        with open(run_dir / "final-log.tsv", "w") as f:
            f.writelines(f"{p}\t{o}\t{v}\n" for p in sorted(rows) for o, v in rows[p])
        verdict = check(acked, rows, consumed, incomplete)
        log("checker: comparing the replicas' segment files")
        deadline = time.monotonic() + 60
        while True:
            mismatches, notes, sizes = compare_replicas(cluster)
            if not mismatches or time.monotonic() > deadline:
                break
            time.sleep(2)

        failed = Counter()
        for w in producers:
            failed.update(w.failed)
        faults = dict(nem.counts)
        result.update(
            faults=faults, faults_total=sum(faults.values()), crashes=nem.crashes,
            attempted=sum(w.attempted for w in producers),
            acked=verdict["acked"], not_acknowledged=dict(failed),
            outstanding_at_close=sum(w.outstanding for w in producers),
            log_records=verdict["log_records"], watermarks=marks,
            lost=len(verdict["lost"]), misplaced=len(verdict["misplaced"]),
            acked_without_offset=len(verdict["no_offset"]),
            duplicates=len(verdict["duplicates"]), order_violations=len(verdict["order"]),
            unacked_present=verdict["unacked_present"],
            consumed=sum(w.count for w in consumers), consumed_distinct=len(consumed),
            consumed_absent=len(verdict["consumed_absent"]), consumer_conflicts=len(conflicts),
            consumer_errors=dict(sum((w.errors for w in consumers), Counter())),
            replica_mismatches=len(mismatches), replica_batches=sizes, segment_notes=notes,
            isr_full=isr_ok, worker_errors=[w.crashed for w in producers + consumers if w.crashed], isr_final=str(isr_final), incomplete_reads=incomplete,
            producer_identities=[i for w in producers for i in w.identities],
            examples=dict(lost=verdict["lost"][:10], acked_without_offset=verdict["no_offset"][:10], misplaced=verdict["misplaced"][:10],
                          duplicates=verdict["duplicates"][:10], order=verdict["order"][:10],
                          consumed_absent=verdict["consumed_absent"][:10],
                          consumer_conflicts=conflicts[:10], replica_mismatches=mismatches[:6]),
            timeline=log.events,
        )
        result["passed"] = (result["lost"] == 0 and result["misplaced"] == 0
                            and result["duplicates"] == 0 and result["order_violations"] == 0
                            and result["replica_mismatches"] == 0 and result["consumed_absent"] == 0
                            and not incomplete and result["acked"] > 0
                            and not result["worker_errors"])
    except BaseException as e:
        result["error"] = f"{type(e).__name__}: {e}"
        log(f"ERROR: {result['error']}")
        if not isinstance(e, Exception):
            raise
    finally:
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        stop_produce.set()
        stop_consume.set()
        if cluster is not None:
            if result.get("passed"):
                cluster.stop()
            else:
                cluster.kill_all()
        (run_dir / "result.json").write_text(json.dumps(result, indent=1, default=str))
        net.teardown()
        report(result, log)
    sys.exit(0 if result["passed"] else 1)


def report(r, log):
    if "acked" not in r:
        log(f"RESULT: FAIL (no verdict: {r.get('error')}); run dir {r['run_dir']}")
        return
    log("RESULT: " + ("PASS" if r["passed"] else "FAIL") + f" against {r['target']}, seed {r['seed']}")
    log(f"  faults: {r['faults_total']} {r['faults']}; nodes that exited by themselves: {len(r['crashes'])}")
    log(f"  acknowledged {r['acked']} of {r['attempted']} produced; not acknowledged: {r['not_acknowledged']}")
    log(f"  acknowledged without an offset in the delivery report: {r['acked_without_offset']}")
    log(f"  log records {r['log_records']}; lost {r['lost']}; acked but at another offset {r['misplaced']}; "
        f"duplicates {r['duplicates']}; order violations {r['order_violations']}; "
        f"unacknowledged but present {r['unacked_present']}")
    log(f"  consumers read {r['consumed']} ({r['consumed_distinct']} distinct offsets); "
        f"read but absent from the final log {r['consumed_absent']}; errors {r['consumer_errors']}")
    log(f"  replica log mismatches {r['replica_mismatches']} (batches per replica {r['replica_batches']}); "
        f"ISRs full at the end: {r['isr_full']}")
    for k, v in r["examples"].items():
        for item in v[:5]:
            log(f"  {k}: {item}")
    for note in r["segment_notes"][:10]:
        log(f"  segment note: {note}")
    for e in r.get("worker_errors", []):
        log(f"  worker error: {e}")
    if r.get("error"):
        log(f"  error: {r['error']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--clean-leftovers":
        netns.clean_leftovers()
        sys.exit(0)
    main()
