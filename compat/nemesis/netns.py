"""The test's network: one namespace per node, one for the clients (and this driver), and
a hub namespace holding a Linux bridge that joins them with veth pairs, on 10.77.<X>.0/24.
Nothing is added to the root namespace's network.

Links are cut on the hub's bridge ports with tc: every port toward a namespace has an HTB
root qdisc whose default class passes everything and whose class 1:2 ends in a
`pfifo limit 0` (every packet enqueued there is dropped). A cut adds a u32 filter on the
port toward node A that sends packets from node B's address to 1:2 (and the other way
round): the packets are silently dropped in the "network", as a partition drops them; TCP
connections stay open and retransmit, and resume once the filter is removed. (This
kernel has neither the gact action, so no `u32 ... action drop`, nor netem, nor the
prio qdisc; iptables is not installed.)

Names are `spn<X>h` (hub), `spn<X>n0..2` (nodes) and `spn<X>c` (clients); X is the
first index in 1..250 not used by a live run, recorded in /run/spate-nemesis/<X>.pid
with the owner's pid, so that two runs never collide and leftovers of a crashed run (its
owner is gone) are removed, with the processes still inside them.
"""
import ctypes
import os
import re
import signal
import subprocess

STATE = "/run/spate-nemesis"
NAME = re.compile(r"^spn(\d+)(h|c|n\d)$")
CLONE_NEWNET = 0x40000000


def sh(*args, check=True, timeout=20):
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {r.stderr.strip()}")
    return r


def namespaces():
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def owner_alive(x):
    try:
        pid = int(open(f"{STATE}/{x}.pid").read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A recycled pid: our owners are python processes running nemesis.py.
    try:
        return b"nemesis" in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def remove_run(x, log=print):
    """Kills what runs inside run X's namespaces (its brokers) and deletes them."""
    for ns in namespaces():
        m = NAME.match(ns)
        if not m or int(m.group(1)) != x:
            continue
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            if pid == str(os.getpid()):
                continue  # this driver, in the clients' namespace
            try:
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
                log(f"killed leftover pid {pid} in {ns}")
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)
    try:
        os.unlink(f"{STATE}/{x}.pid")
    except OSError:
        pass


def clean_leftovers(log=print):
    """Removes the namespaces of every run whose owner is gone."""
    seen = set()
    for ns in namespaces():
        m = NAME.match(ns)
        if m:
            seen.add(int(m.group(1)))
    for x in sorted(seen):
        if not owner_alive(x):
            log(f"removing the namespaces of an earlier run (spn{x}*)")
            remove_run(x, log)


class Net:
    def __init__(self, nodes=3, log=print):
        self.log = log
        self.n = nodes
        os.makedirs(STATE, exist_ok=True)
        clean_leftovers(log)
        used = {int(NAME.match(ns).group(1)) for ns in namespaces() if NAME.match(ns)}
        self.x = None
        for x in range(1, 251):
            if x in used:
                continue
            try:
                fd = os.open(f"{STATE}/{x}.pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if owner_alive(x):
                    continue
                os.unlink(f"{STATE}/{x}.pid")
                fd = os.open(f"{STATE}/{x}.pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            self.x = x
            break
        if self.x is None:
            raise RuntimeError("no free run index in 1..250")
        self.hub = f"spn{self.x}h"
        self.client_ns = f"spn{self.x}c"
        self.node_ns = [f"spn{self.x}n{i}" for i in range(nodes)]
        self.subnet = f"10.77.{self.x}.0/24"
        self.cuts = set()  # (a, b) with a < b: node pairs whose link is cut

    def ip(self, i):
        return f"10.77.{self.x}.{11 + i}"

    @property
    def client_ip(self):
        return f"10.77.{self.x}.100"

    def port(self, i):
        return f"h{i}"

    def setup(self):
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        ends = [(ns, self.ip(i), f"h{i}") for i, ns in enumerate(self.node_ns)]
        ends.append((self.client_ns, self.client_ip, "hc"))
        for ns, addr, port in ends:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # Both ends are created inside the hub, the far one moved at once.
            sh("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            tc = ["tc", "-n", self.hub]
            sh(*tc, "qdisc", "add", "dev", port, "root", "handle", "1:", "htb", "default", "1",
               "r2q", "100000")
            sh(*tc, "class", "add", "dev", port, "parent", "1:", "classid", "1:1", "htb", "rate",
               "10gbit")
            sh(*tc, "class", "add", "dev", port, "parent", "1:", "classid", "1:2", "htb", "rate",
               "1mbit")
            sh(*tc, "qdisc", "add", "dev", port, "parent", "1:2", "handle", "2:", "pfifo",
               "limit", "0")

    def enter_client_namespace(self):
        """Moves this (still single-threaded) process into the clients' namespace; the
        threads it starts later (librdkafka's) inherit it."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/run/netns/{self.client_ns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    # --- cuts -------------------------------------------------------------------------
    def _drop_from(self, port, src):
        sh("tc", "-n", self.hub, "filter", "add", "dev", port, "parent", "1:", "protocol", "ip",
           "prio", "1", "u32", "match", "ip", "src", f"{src}/32", "flowid", "1:2")

    def cut(self, a, b):
        """Drops every packet between nodes a and b, both ways."""
        a, b = min(a, b), max(a, b)
        if (a, b) in self.cuts:
            return
        self._drop_from(self.port(a), self.ip(b))
        self._drop_from(self.port(b), self.ip(a))
        self.cuts.add((a, b))

    def isolate(self, a):
        """Cuts node a from every other node (the clients still reach it)."""
        for b in range(self.n):
            if b != a:
                self.cut(a, b)

    def heal(self):
        for i in range(self.n):
            sh("tc", "-n", self.hub, "filter", "del", "dev", self.port(i), "parent", "1:", check=False)
        self.cuts.clear()

    def teardown(self):
        if self.x is not None:
            remove_run(self.x, self.log)
            self.x = None

    # --- the probe ----------------------------------------------------------------------
    def probe(self):
        """Checks that the cut primitive works before relying on it: a TCP echo server in
        node 1's namespace, connections from node 0's: up, cut (an open connection stalls
        and a new one times out), healed (the open connection resumes)."""
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.node_ns[1], "python3", "-c", PROBE_SERVER, self.ip(1)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            r = subprocess.run(
                ["ip", "netns", "exec", self.node_ns[0], "python3", "-c", PROBE_CLIENT,
                 self.ip(1), self.hub, self.port(0), self.port(1), self.ip(0)],
                capture_output=True, text=True, timeout=60)
        finally:
            server.kill()
            server.wait()
        if r.returncode != 0 or "PROBE OK" not in r.stdout:
            raise RuntimeError(f"the link-cut probe failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout.strip()


PROBE_SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7999)); s.listen()
def echo(c):
    try:
        while True:
            d = c.recv(100)
            if not d: return
            c.sendall(d)
    except OSError: return
while True:
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

PROBE_CLIENT = r"""
import socket, subprocess, sys, time
peer, hub, p0, p1, me = sys.argv[1:]
def tc(*a): subprocess.run(["tc", "-n", hub, *a], check=True, capture_output=True)
for _ in range(50):
    try: c = socket.create_connection((peer, 7999), timeout=2); break
    except OSError: time.sleep(0.1)
c.settimeout(2); c.sendall(b"a"); assert c.recv(1) == b"a"
tc("filter", "add", "dev", p1, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "src", me + "/32", "flowid", "1:2")
tc("filter", "add", "dev", p0, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "src", peer + "/32", "flowid", "1:2")
c.sendall(b"b")
try:
    c.recv(1); print("open connection NOT cut"); sys.exit(1)
except socket.timeout: pass
t = time.monotonic()
try:
    socket.create_connection((peer, 7999), timeout=2); print("new connection NOT cut"); sys.exit(1)
except socket.timeout: pass
tc("filter", "del", "dev", p0, "parent", "1:"); tc("filter", "del", "dev", p1, "parent", "1:")
c.settimeout(10)
assert c.recv(1) == b"b", "open connection did not resume"
socket.create_connection((peer, 7999), timeout=2).close()
print("PROBE OK: cut stalls an open connection and times out a new one; healed, both work")
"""
