#!/usr/bin/env python3
"""Helpers for bench/recovery/run: measure how long containerd-shim-embed-v1
takes to serve again after its server process is SIGKILLed.

  probe.py instance-hash SOCK         the shim instance name of containerd SOCK
  probe.py server-pid SHIM_BIN SOCK   the live server serving SOCK (exit 1 if none)
  probe.py shim-pids SHIM_DIR SOCK    every keeper and server process of SOCK's instance
  probe.py measure --shim-bin B --address SOCK --log LOG --ns NS --id ID
                   [--mode ttrpc|ctr] [--ctr-address SOCK]
      one measurement: SIGKILL the server, then time until a State call for
      container ID succeeds. Prints one JSON line:
        {"mode", "kill_to_answer_ms", "serving_ms", "exited_to_serving_ms",
         "exited_to_started_ms", "old_pid", "new_pid"}
      --mode ttrpc: a State request on a connection opened (and used once)
        before the kill, written right after the kill: the keeper holds the
        connection and replays the request to the next server, just as it
        does for containerd's own connections.
      --mode ctr: `ctr task ls` started right after the kill (includes ctr's
        and containerd's own cost: compare with --mode ctr-baseline).
      --mode ctr-baseline: `ctr task ls` with no kill.

The ttrpc client is a few lines of wire format (10-byte frame header, the
Request/Response envelopes, StateRequest), so nothing needs building.
"""

import argparse
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone

# --- protobuf, by hand -------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def parse(buf):
    """{field number: [values]} of one message (varints and bytes only)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


# --- ttrpc -------------------------------------------------------------------

REQUEST, RESPONSE = 1, 2


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.stream = 1

    def send_state(self, ns, cid):
        payload = field_bytes(1, cid.encode())  # StateRequest.id
        req = (field_bytes(1, b"containerd.task.v2.Task") + field_bytes(2, b"State") +
               field_bytes(3, payload) + field_varint(4, 30_000_000_000) +
               field_bytes(5, field_bytes(1, b"containerd-namespace-ttrpc") +
                           field_bytes(2, ns.encode())))
        sid = self.stream
        self.stream += 2
        self.sock.sendall(struct.pack(">IIBB", len(req), sid, REQUEST, 0) + req)
        return sid

    def recv(self):
        hdr = self._read(10)
        length, sid, typ, _ = struct.unpack(">IIBB", hdr)
        body = self._read(length)
        if typ != RESPONSE:
            raise RuntimeError(f"frame type {typ}")
        resp = parse(body)
        status = parse(resp.get(1, [b""])[0])
        code = status.get(1, [0])[0]
        msg = status.get(2, [b""])[0].decode(errors="replace")
        state = parse(resp.get(2, [b""])[0])
        return sid, code, msg, state

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
        return buf

    def state(self, ns, cid):
        sid = self.send_state(ns, cid)
        rsid, code, msg, state = self.recv()
        if rsid != sid:
            raise RuntimeError(f"answer on stream {rsid}, asked on {sid}")
        return code, msg, state


# --- processes, logs ---------------------------------------------------------


def instance_hash(address):
    h = 1469598103934665603
    for c in address.encode():
        h ^= c
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def server_pids(shim_bin, address):
    shim_bin = os.path.realpath(shim_bin)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{d}/exe")
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue  # gone, or a zombie
        exe = exe.removesuffix(" (deleted)")
        if exe == shim_bin and b"serve" in args and address.encode() in args:
            out.append(int(d))
    return out


def shim_pids(shim_dir, address):
    instance = os.path.join(os.environ.get("EMBED_SHIM_RUN_DIR", "/run/containerd-embed"),
                            instance_hash(address))
    keeper = os.path.realpath(os.path.join(shim_dir, "containerd-shim-embed-v1-keeper"))
    out = server_pids(os.path.join(shim_dir, "containerd-shim-embed-v1-server"), address)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{d}/exe").removesuffix(" (deleted)")
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if exe == keeper and len(args) > 1 and args[1].startswith(instance.encode() + b"/"):
            out.append(int(d))
    return out


def log_time(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z", line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=timezone.utc).timestamp()


def wait_serving(log, offset, old_pid, timeout=10.0):
    """The first "serving for containerd" line after `offset` from another pid:
    (pid, its "in X ms", keeper exited -> serving ms, keeper exited -> started ms)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        exited = started = None
        for line in text.splitlines():
            if "keeper: server exited" in line and exited is None:
                exited = log_time(line)
            if "keeper: server pid" in line and "started" in line and started is None:
                started = log_time(line)
            if "serving for containerd" in line:
                m = re.search(r" pid=(\d+) ", line)
                pid = int(m.group(1)) if m else 0
                if pid and pid != old_pid:
                    ms = re.search(r" in ([0-9.]+) ms", line)
                    t = log_time(line)
                    return (pid, float(ms.group(1)) if ms else None,
                            (t - exited) * 1000 if exited and t else None,
                            (started - exited) * 1000 if exited and started else None)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no new server serving in {log} after {timeout}s")
        time.sleep(0.005)


def measure(a):
    pids = server_pids(a.shim_bin, a.address)
    if len(pids) != 1:
        raise RuntimeError(f"want one server, found {pids}")
    old = pids[0]
    ctr = ["ctr", "--address", a.address, "-n", a.ns, "tasks", "ls"]
    if a.mode == "ctr-baseline":
        t0 = time.monotonic()
        subprocess.run(ctr, check=True, stdout=subprocess.DEVNULL)
        print(json.dumps({"mode": a.mode, "kill_to_answer_ms": (time.monotonic() - t0) * 1000}))
        return
    conn = None
    if a.mode == "ttrpc":
        instance = os.path.join(os.environ.get("EMBED_SHIM_RUN_DIR", "/run/containerd-embed"),
                                instance_hash(a.address))
        conn = Conn(os.path.join(instance, "shim.sock"))
        code, msg, _ = conn.state(a.ns, a.id)  # the connection is in use before the kill
        if code != 0:
            raise RuntimeError(f"State before the kill: code {code}: {msg}")
    pidfd = os.pidfd_open(old)
    offset = os.path.getsize(a.log)
    t0 = time.monotonic()
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    if a.mode == "ttrpc":
        code, msg, state = conn.state(a.ns, a.id)
        t1 = time.monotonic()
        if code != 0:
            raise RuntimeError(f"State after the kill: code {code}: {msg}")
        if state.get(3, [0])[0] == 0:
            raise RuntimeError("State after the kill: no pid")
    else:
        r = subprocess.run(ctr, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t1 = time.monotonic()
        if r.returncode != 0 or a.id not in r.stdout or "UNKNOWN" in r.stdout:
            raise RuntimeError(f"ctr task ls after the kill: {r.returncode} {r.stdout} {r.stderr}")
    new, serving_ms, exited_to_serving, exited_to_started = wait_serving(a.log, offset, old)
    os.close(pidfd)
    print(json.dumps({
        "mode": a.mode, "kill_to_answer_ms": (t1 - t0) * 1000, "serving_ms": serving_ms,
        "exited_to_serving_ms": exited_to_serving, "exited_to_started_ms": exited_to_started,
        "old_pid": old, "new_pid": new}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("instance-hash")
    s.add_argument("address")
    s = sub.add_parser("server-pid")
    s.add_argument("shim_bin")
    s.add_argument("address")
    s = sub.add_parser("shim-pids")
    s.add_argument("shim_dir")
    s.add_argument("address")
    s = sub.add_parser("measure")
    s.add_argument("--shim-bin", required=True)
    s.add_argument("--address", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--ns", required=True)
    s.add_argument("--id", required=True)
    s.add_argument("--mode", choices=["ttrpc", "ctr", "ctr-baseline"], default="ttrpc")
    a = p.parse_args()
    if a.cmd == "instance-hash":
        print(instance_hash(a.address))
    elif a.cmd == "server-pid":
        pids = server_pids(a.shim_bin, a.address)
        if not pids:
            sys.exit(1)
        print(" ".join(map(str, pids)))
    elif a.cmd == "shim-pids":
        print(" ".join(map(str, shim_pids(a.shim_dir, a.address))))
    else:
        measure(a)


if __name__ == "__main__":
    main()
