#!/usr/bin/env python3
"""Small helpers for bench/compare/run (python3 stdlib only).

  helpers.py mem SOCK                 shim processes of the containerd at SOCK -> JSON
  helpers.py wait-gone SOCK SECONDS   wait until no shim process of SOCK is left
  helpers.py pids SOCK                their pids, one a line
  helpers.py instance-hash SOCK       our shim's instance name for SOCK (shim/store/paths.cc)
  helpers.py state-hex ID             a containerd.task.v2 StateRequest{id} as hex
  helpers.py parse-ttrpc FILE         bench_ttrpc's markdown output -> JSON
  helpers.py events ...               the events phase (see events_phase)
  helpers.py runc-create ...          time `runc create` directly on a bundle

A "shim process of SOCK" is any process whose argv holds the pair
`-address SOCK`: containerd starts both containerd-shim-runc-v2 and our shim
with it, and our daemon keeps it (`<shim> -address SOCK -namespace NS serve`).
ctr's own `--address` (two dashes) does not match.
"""
import argparse
import calendar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time


# --- shim processes and their memory ---------------------------------------

def shim_pids(sock):
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/cmdline', 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        s = sock.encode()
        if any(args[i] == b'-address' and args[i + 1] == s for i in range(len(args) - 1)):
            out.append(int(d))
    return sorted(out)


def read_kv(path):
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(':') and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    return out


def mem(sock):
    total = {'procs': 0, 'pss_kib': 0, 'uss_kib': 0, 'rss_kib': 0, 'threads': 0, 'fds': 0,
             'pids': [], 'by_name': {}}
    for pid in shim_pids(sock):
        try:
            r = read_kv(f'/proc/{pid}/smaps_rollup')
            st = read_kv(f'/proc/{pid}/status')
            fds = len(os.listdir(f'/proc/{pid}/fd'))
        except OSError:
            continue  # exited meanwhile
        total['procs'] += 1
        total['pss_kib'] += r.get('Pss', 0)
        total['uss_kib'] += r.get('Private_Clean', 0) + r.get('Private_Dirty', 0)
        total['rss_kib'] += st.get('VmRSS', 0)
        total['threads'] += st.get('Threads', 0)
        total['fds'] += fds
        total['pids'].append(pid)
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                name = os.path.basename(f.read().split(b'\0')[0].decode())
        except OSError:
            name = '?'
        one = total['by_name'].setdefault(name, {'procs': 0, 'pss_kib': 0, 'uss_kib': 0,
                                                 'rss_kib': 0})
        one['procs'] += 1
        one['pss_kib'] += r.get('Pss', 0)
        one['uss_kib'] += r.get('Private_Clean', 0) + r.get('Private_Dirty', 0)
        one['rss_kib'] += st.get('VmRSS', 0)
        if os.environ.get('BENCH_SMAPS_DIR') and 'embed' in name:
            dump_smaps(pid, name, os.environ['BENCH_SMAPS_DIR'])
    return total


def dump_smaps(pid, name, out_dir):
    """BENCH_SMAPS_DIR set: where each measured process's PSS lies, for
    bench/layout: its /proc/PID/smaps, and the page numbers present in each
    executable mapping (pagemap), `<start>-<end> <page>...` a line."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f'{name}-{pid}-{time.strftime("%H%M%S")}')
    try:
        with open(f'/proc/{pid}/smaps') as f:
            smaps = f.read()
        lines = []
        with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/pagemap', 'rb') as pm:
            for line in maps:
                p = line.split()
                if 'x' not in p[1] or len(p) < 6:
                    continue
                lo, hi = (int(x, 16) for x in p[0].split('-'))
                pm.seek(lo // 4096 * 8)
                data = pm.read((hi - lo) // 4096 * 8)
                present = [str(i) for i in range(len(data) // 8)
                           if int.from_bytes(data[i * 8:i * 8 + 8], 'little') >> 63]
                lines.append(f'{p[0]} {p[5]} ' + ' '.join(present))
    except OSError:
        return
    with open(base + '.smaps', 'w') as f:
        f.write(smaps)
    with open(base + '.text', 'w') as f:
        f.write('\n'.join(lines) + '\n')


def wait_gone(sock, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not shim_pids(sock):
            return True
        time.sleep(0.05)
    return False


# --- small encoders --------------------------------------------------------

def instance_hash(sock):
    # FNV-1a over the address without unix://, as shim/store/paths.cc does.
    if sock.startswith('unix://'):
        sock = sock[7:]
    h = 1469598103934665603
    for b in sock.encode():
        h ^= b
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f'{h:016x}'


def state_hex(cid):
    b = cid.encode()
    assert len(b) < 128
    return (bytes([0x0A, len(b)]) + b).hex()


def parse_ttrpc(path):
    """bench_ttrpc prints two markdown tables: latency rows (measurement,
    conns, calls, errors, median, p99, mean, max, CPU/call) and one throughput
    row (measurement, conns, duration, calls, errors, calls/s, median, p99,
    CPU/call)."""
    out = {}
    num = lambda s: float(s.split()[0])
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) < 9 or not cells[0].startswith('unary'):
                continue
            if cells[0].startswith('unary latency, BlockingClient'):
                out['lat_client'] = {'calls': int(cells[2]), 'errors': int(cells[3]),
                                     'p50_us': num(cells[4]), 'p99_us': num(cells[5]),
                                     'max_us': num(cells[7])}
            elif cells[0].startswith('unary latency, raw'):
                out['lat_raw'] = {'calls': int(cells[2]), 'errors': int(cells[3]),
                                  'p50_us': num(cells[4]), 'p99_us': num(cells[5]),
                                  'max_us': num(cells[7])}
            elif cells[0].startswith('unary throughput'):
                out['tput'] = {'conns': int(cells[1]), 'calls': int(cells[3]),
                               'errors': int(cells[4]), 'calls_per_s': float(cells[5]),
                               'p50_us': num(cells[6]), 'p99_us': num(cells[7])}
    return out


# --- ctr events ------------------------------------------------------------

_GO_TIME = re.compile(
    r'^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?\s*(Z|[+-]\d\d:?\d\d)?')


def go_time_ns(s):
    """Go's time.Time.String() ("2006-01-02 15:04:05.999999999 -0700 MST")
    or RFC 3339 ("2006-01-02T15:04:05.999999999Z07:00") -> Unix ns."""
    m = _GO_TIME.match(s)
    if not m:
        raise ValueError(f'not a time: {s!r}')
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or '').ljust(9, '0')
    ns = calendar.timegm((y, mo, d, h, mi, sec)) * 10**9 + int(frac or 0)
    tz = m.group(8)
    if tz and tz != 'Z':
        sign = 1 if tz[0] == '+' else -1
        digits = tz[1:].replace(':', '')
        ns -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * 10**9
    return ns


class EventTap:
    """Runs `ctr events` and keeps every event with the time we read it."""

    def __init__(self, ctr):
        self.proc = subprocess.Popen(ctr + ['events'], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.events = []  # dicts: topic, ns, ts_ns (envelope), recv_ns, body
        self.cv = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        buf = b''
        while True:
            data = os.read(fd, 65536)
            recv = time.time_ns()
            if not data:
                return
            buf += data
            while b'\n' in buf:
                line, buf = buf.split(b'\n', 1)
                ev = self._parse(line.decode(errors='replace'), recv)
                if ev:
                    with self.cv:
                        self.events.append(ev)
                        self.cv.notify_all()

    @staticmethod
    def _parse(line, recv):
        # "<date> <time> <offset> <zone> <namespace> <topic> <json>"
        parts = line.split(' ', 6)
        if len(parts) < 6:
            return None
        try:
            ts = go_time_ns(' '.join(parts[0:3]))
        except ValueError:
            return None
        body = {}
        if len(parts) == 7:
            try:
                body = json.loads(parts[6])
            except ValueError:
                body = {}
        return {'ts_ns': ts, 'recv_ns': recv, 'ns': parts[4], 'topic': parts[5], 'body': body}

    def find(self, topic, cid):
        key = 'id' if topic.startswith('/containers/') else 'container_id'
        with self.cv:
            for ev in self.events:
                if ev['topic'] == topic and ev['body'].get(key) == cid:
                    return ev
        return None

    def wait_for(self, topic, cid, timeout):
        end = time.monotonic() + timeout
        while True:
            ev = self.find(topic, cid)
            if ev:
                return ev
            left = end - time.monotonic()
            if left <= 0:
                return None
            with self.cv:
                self.cv.wait(min(left, 0.05))

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def record(out, metric, runtime, n, rep, value, **extra):
    d = {'metric': metric, 'runtime': runtime, 'n': n, 'rep': rep, 'value': value}
    d.update(extra)
    out.write(json.dumps(d) + '\n')
    out.flush()


class ExecTrace:
    """System-wide exec, fork and exit tracepoints (`perf record`), stamped
    with CLOCK_MONOTONIC and moved to CLOCK_REALTIME, the event envelopes'
    clock (perf 6.1 refuses -k realtime). Used to time, per
    container, when containerd ran the shim binary and how long that
    container's `runc create` ran, without touching either shim."""

    EVENTS = ['sched:sched_process_exec', 'sched:sched_process_fork', 'sched:sched_process_exit']

    def __init__(self, path):
        self.path = path
        self.to_realtime = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        argv = ['perf', 'record', '-q', '-a', '-k', 'monotonic', '-o', path]
        for e in self.EVENTS:
            argv += ['-e', e]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # perf writes its header once the events are enabled.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                break
            time.sleep(0.01)

    def stop(self):
        """Returns (execs, parent_of, group_exit): execs = [(ts_ns, tgid, filename)],
        parent_of = {child tgid: parent tgid}, group_exit = {tgid: ts_ns}."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        out = subprocess.run(['perf', 'script', '-i', self.path, '--ns', '-F', 'pid,tid,time,event,trace'],
                             capture_output=True, text=True).stdout
        execs, parent_of, group_exit = [], {}, {}
        line_re = re.compile(r'\s*(\d+)/(\d+)\s+(\d+)\.(\d+):\s+sched:(\w+):\s+(.*)')
        for line in out.splitlines():
            m = line_re.match(line)
            if not m:
                continue
            tgid = int(m[1])
            ts = int(m[3]) * 1_000_000_000 + int(m[4].ljust(9, '0')[:9]) + self.to_realtime
            kind, fields = m[5], dict(re.findall(r'(\w+)=(\S+)', m[6]))
            if kind == 'sched_process_exec':
                execs.append((ts, tgid, fields.get('filename', '')))
            elif kind == 'sched_process_fork':
                parent_of.setdefault(int(fields['child_pid']), tgid)
            elif kind == 'sched_process_exit' and fields.get('group_dead') == 'true':
                group_exit[tgid] = ts
        os.unlink(self.path)
        return execs, parent_of, group_exit


def shim_create_overheads(trace, windows, shim_binary, roots):
    """Per container: the shim's own time on create = containerd execs the
    shim binary (`start`) -> the shim publishes /tasks/create, minus that
    container's `runc create` (its exec -> its last thread's exit). Windows
    are (cid, /containers/create ts, /tasks/create ts); containers were
    created one after another, so each window holds one create. Only
    processes that descend from `roots` (containerd, the running shims)
    count, so other work on the host is ignored."""
    execs, parent_of, group_exit = trace

    def ours(pid):
        for _ in range(64):
            if pid in roots:
                return True
            if pid not in parent_of:
                return False
            pid = parent_of[pid]
        return False

    out = {}
    for cid, t_begin, t_end in windows:
        in_window = [e for e in execs if t_begin <= e[0] <= t_end and ours(e[1])]
        shim = next((e for e in in_window if os.path.basename(e[2]) == shim_binary), None)
        if not shim:
            continue
        runc = next((e for e in in_window if e[0] > shim[0] and os.path.basename(e[2]) == 'runc'), None)
        if not runc or runc[1] not in group_exit:
            continue
        runc_ns = group_exit[runc[1]] - runc[0]
        out[cid] = ((t_end - shim[0]) - runc_ns) / 1e6
    return out


def events_phase(a):
    """Start K containers one after another, then SIGKILL their init
    processes one at a time from here, and read the events.

    create: /containers/create (stamped by containerd when the container
      record is made) -> /tasks/create (stamped by the shim when it publishes,
      after `runc create` returned). In between: ctr's NewTask RPC,
      containerd writing the bundle and running `<shim> start`, the shim
      connection, the Create RPC with `runc create`, the publish.
    exit: t0 = CLOCK_REALTIME just before kill(pid, SIGKILL) from this
      process -> the /tasks/exit envelope timestamp, which the shim sets when
      it publishes (both clocks are this host's CLOCK_REALTIME). Also t0 -> the
      moment `ctr events` printed the line here (through containerd), and
      t0 -> the event's exited_at (what the shim recorded as the exit time).
    """
    ctr = ['ctr', '--address', a.sock, '-n', a.ns]
    tap = EventTap(ctr)
    time.sleep(1.0)  # let the subscription settle
    ids = [f'{a.prefix}-{i}' for i in range(1, a.k + 1)]
    out = open(a.out, 'a')
    rt, rep = a.label, a.rep
    try:
        trace = ExecTrace(a.out + f'.perf-{rt}-{rep}') if shutil.which('perf') else None
        for cid in ids:
            subprocess.run(ctr + ['run', '-d', '--runtime', a.runtime, '--fifo-dir', a.fifo_dir,
                                  '--env', 'PATH=/bin', '--rootfs', a.rootfs, cid,
                                  'sleep', '100000'],
                           check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        windows = []
        for cid in ids:
            cc = tap.wait_for('/containers/create', cid, 5)
            tc = tap.wait_for('/tasks/create', cid, 5)
            if cc and tc:
                windows.append((cid, cc['ts_ns'], tc['ts_ns']))
        if trace:
            roots = {a.containerd_pid} | set(shim_pids(a.sock))
            shim_binary = os.path.basename(a.runtime_binary)
            for cid, v in shim_create_overheads(trace.stop(), windows, shim_binary, roots).items():
                record(out, 'shim_create_overhead_ms', rt, 0, rep, v)
        pids = {}
        for cid in ids:
            cc = tap.wait_for('/containers/create', cid, 5)
            tc = tap.wait_for('/tasks/create', cid, 5)
            ts = tap.wait_for('/tasks/start', cid, 5)
            if not (cc and tc):
                print(f'events: no create events for {cid}', file=sys.stderr)
                continue
            pids[cid] = tc['body'].get('pid')
            record(out, 'create_path_ms', rt, 0, rep, (tc['ts_ns'] - cc['ts_ns']) / 1e6)
            if ts:
                record(out, 'create_to_start_ms', rt, 0, rep, (ts['ts_ns'] - tc['ts_ns']) / 1e6)
        if a.bundle_copy and ids:
            src = os.path.join(a.state, 'io.containerd.runtime.v2.task', a.ns, ids[0],
                               'config.json')
            shutil.copy(src, a.bundle_copy)
        for cid in ids:
            pid = pids.get(cid)
            if not pid:
                continue
            time.sleep(0.05)
            t0 = time.time_ns()
            os.kill(pid, signal.SIGKILL)
            ev = tap.wait_for('/tasks/exit', cid, 10)
            if not ev:
                print(f'events: no /tasks/exit for {cid}', file=sys.stderr)
                continue
            record(out, 'exit_event_ms', rt, 0, rep, (ev['ts_ns'] - t0) / 1e6)
            record(out, 'exit_event_recv_ms', rt, 0, rep, (ev['recv_ns'] - t0) / 1e6)
            ea = ev['body'].get('exited_at')
            if ea:
                record(out, 'exit_stamp_ms', rt, 0, rep, (go_time_ns(ea) - t0) / 1e6)
    finally:
        subprocess.run(ctr + ['task', 'rm', '-f'] + ids, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run(ctr + ['c', 'rm'] + ids, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        tap.close()
        out.close()


def runc_create(a):
    """`runc create` timed directly, from fork to exit, on a bundle made from
    the config.json containerd wrote for a container of this run (same
    rootfs, same spec; own cgroup path and id). The flags are the ones the
    shims pass (--log/--log-format json, --pid-file). `runc delete -f`
    between runs is not timed."""
    with open(a.config) as f:
        spec = json.load(f)
    os.makedirs(a.bundle, exist_ok=True)
    out = open(a.out, 'a')
    root = a.root
    for i in range(1, a.k + 1):
        cid = f'runc-direct-{a.rep}-{i}'
        spec.setdefault('linux', {})['cgroupsPath'] = f'/{a.ns}/{cid}'
        with open(os.path.join(a.bundle, 'config.json'), 'w') as f:
            json.dump(spec, f)
        argv = ['runc', '--root', root, '--log', os.path.join(a.bundle, 'log.json'),
                '--log-format', 'json', 'create', '--bundle', a.bundle,
                '--pid-file', os.path.join(a.bundle, 'init.pid'), cid]
        t0 = time.perf_counter_ns()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        t1 = time.perf_counter_ns()
        subprocess.run(['runc', '--root', root, 'delete', '-f', cid],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            print(f'runc create failed ({r.returncode}); see {a.bundle}/log.json',
                  file=sys.stderr)
            sys.exit(1)
        record(out, 'runc_create_ms', 'runc', 0, a.rep, (t1 - t0) / 1e6)
    out.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('mem'); s.add_argument('sock')
    s = sub.add_parser('pids'); s.add_argument('sock')
    s = sub.add_parser('wait-gone'); s.add_argument('sock'); s.add_argument('seconds', type=float)
    s = sub.add_parser('instance-hash'); s.add_argument('sock')
    s = sub.add_parser('state-hex'); s.add_argument('id')
    s = sub.add_parser('parse-ttrpc'); s.add_argument('file')
    s = sub.add_parser('events')
    for flag in ('sock', 'ns', 'runtime', 'label', 'rootfs', 'fifo-dir', 'prefix', 'out', 'state'):
        s.add_argument('--' + flag, required=True)
    s.add_argument('--k', type=int, default=20)
    s.add_argument('--rep', type=int, default=1)
    s.add_argument('--bundle-copy', default='')
    s.add_argument('--containerd-pid', type=int, required=True)
    s.add_argument('--runtime-binary', required=True)
    s = sub.add_parser('runc-create')
    for flag in ('config', 'bundle', 'root', 'ns', 'out'):
        s.add_argument('--' + flag, required=True)
    s.add_argument('--k', type=int, default=20)
    s.add_argument('--rep', type=int, default=1)
    a = p.parse_args()

    if a.cmd == 'mem':
        print(json.dumps(mem(a.sock)))
    elif a.cmd == 'pids':
        for pid in shim_pids(a.sock):
            print(pid)
    elif a.cmd == 'wait-gone':
        sys.exit(0 if wait_gone(a.sock, a.seconds) else 1)
    elif a.cmd == 'instance-hash':
        print(instance_hash(a.sock))
    elif a.cmd == 'state-hex':
        print(state_hex(a.id))
    elif a.cmd == 'parse-ttrpc':
        print(json.dumps(parse_ttrpc(a.file)))
    elif a.cmd == 'events':
        events_phase(a)
    elif a.cmd == 'runc-create':
        runc_create(a)


if __name__ == '__main__':
    main()
