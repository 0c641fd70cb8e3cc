#!/usr/bin/env python3
"""Turns bench/compare/run's results.jsonl into the markdown report, the
gnuplot data file, and PASS/MISS lines against the targets (stdlib only)."""
import argparse
import json
import statistics
import sys
from collections import defaultdict

RT = ('runc-v2', 'embed')


def load(path):
    vals = defaultdict(list)  # (metric, runtime, n) -> [values]
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                float(d['value'])
            except (ValueError, KeyError, TypeError):
                print(f'report: skipping malformed line {line!r}', file=sys.stderr)
                continue
            vals[(d['metric'], d['runtime'], int(d['n']))].append(float(d['value']))
    return vals


def stats(vals, metric, rt, n=0):
    v = vals.get((metric, rt, n))
    if not v:
        return None
    return min(v), statistics.median(v), len(v)


def fmt(x, digits):
    if x is None:
        return '–'
    return f'{x:,.{digits}f}'


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data', required=True)
    p.add_argument('--md', required=True)
    p.add_argument('--plot-data', required=True)
    p.add_argument('--ns', required=True)
    p.add_argument('--reps', type=int, required=True)
    p.add_argument('--k', type=int, required=True)
    p.add_argument('--big', type=int, required=True)
    p.add_argument('--machine', action='append', default=[])
    p.add_argument('--png-name', required=True)
    a = p.parse_args()
    vals = load(a.data)
    ns = [int(x) for x in a.ns.split()]

    rows = []  # markdown rows of the main table

    def row(label, metric, n=0, scale=1.0, digits=2, lower_better=True, missing='–'):
        r = {rt: stats(vals, metric, rt, n) for rt in RT}
        cells = [label]
        for rt in RT:
            s = r[rt]
            cells += [fmt(s[0] * scale, digits), fmt(s[1] * scale, digits)] if s else [missing, missing]
        if r['runc-v2'] and r['embed'] and r['runc-v2'][1] != 0:
            ratio = r['embed'][1] / r['runc-v2'][1]
            cells.append(f'{ratio:.3g}')
        else:
            cells.append(missing)
        rows.append('| ' + ' | '.join(cells) + ' |')
        return r

    def section(title):
        rows.append(f'| **{title}** | | | | | |')

    section('start / memory / stop, N containers of `sleep 100000`')
    for n in ns:
        row(f'start all N={n} (s)', 'start_all_s', n)
        row(f'shim processes, N={n}', 'shim_procs', n, digits=0)
        row(f'shim PSS total, N={n} (MiB)', 'shim_pss_kib', n, 1 / 1024, 1)
        row(f'shim USS total, N={n} (MiB)', 'shim_uss_kib', n, 1 / 1024, 1)
        row(f'stop+delete all N={n} (s)', 'stop_delete_all_s', n)

    # Marginal private memory per extra container, from the medians.
    lo, hi = (10, 50) if 10 in ns and 50 in ns else (sorted(ns)[-2:] if len(ns) >= 2 else (None, None))
    marginal = {}
    if lo is not None:
        for rt in RT:
            a_, b_ = stats(vals, 'shim_uss_kib', rt, lo), stats(vals, 'shim_uss_kib', rt, hi)
            if a_ and b_:
                marginal[rt] = (b_[1] - a_[1]) / (hi - lo)
        cells = [f'marginal USS per extra container, (USS(N={hi}) − USS(N={lo}))/{hi - lo} of medians (KiB)']
        for rt in RT:
            cells += ['', fmt(marginal.get(rt), 1)]
        cells.append(f"{marginal['embed'] / marginal['runc-v2']:.3g}"
                     if marginal.get('runc-v2') and 'embed' in marginal else '–')
        rows.append('| ' + ' | '.join(cells) + ' |')

    # Per-process breakdown of embed's shim processes (server, keeper).
    names = sorted({m.split(':', 1)[1] for (m, rt, n) in vals if m.startswith('shim_pss_kib:')})
    for n in ns:
        for name in names:
            for key, label in (('pss_kib', 'PSS'), ('uss_kib', 'USS')):
                s_ = stats(vals, f'shim_{key}:{name}', 'embed', n)
                if s_ and n == (50 if 50 in ns else ns[-1]):
                    rows.append(f'| embed {label} of `{name}` alone, N={n} (MiB) | | | '
                                f'{s_[0] / 1024:.1f} | {s_[1] / 1024:.1f} | |')

    def count(metric, rt):
        return int(sum(v for (m, r, n), vs in vals.items() if m == metric and r == rt for v in vs))

    section('run to exit: `ctr run --rm ... sh -c "exit 0"`')
    cells = ['`ctr run --rm` that failed / all (failed ones are not in the times)']
    for rt in RT:
        ok, bad = count('run_exit_ok', rt), count('run_exit_failed', rt)
        cells += ['', f'{bad} / {ok + bad}']
    rows.append('| ' + ' | '.join(cells + ['']) + ' |')
    cells = ['`ctr task rm` refused ("not stopped") after the exit was reported, then retried']
    for rt in RT:
        cells += ['', str(count('task_rm_refused', rt))]
    rows.append('| ' + ' | '.join(cells + ['']) + ' |')
    row('run to exit, warm: another container of the runtime running (ms)', 'run_exit_ms', digits=1)
    row('run to exit, cold: no shim of the runtime running (ms)', 'run_exit_cold_ms', digits=1)

    section('exec: `ctr task exec --exec-id ID <task> true` on a running container')
    cells = ['`ctr task exec` that failed / all (failed ones are not in the times)']
    for rt in RT:
        ok, bad = count('exec_ok', rt), count('exec_failed', rt)
        cells += ['', f'{bad} / {ok + bad}']
    rows.append('| ' + ' | '.join(cells + ['']) + ' |')
    # n/a: the runtime ran no exec to its end (embed before it had exec).
    row('exec to exit: `ctr task exec ... true` (ms)', 'exec_ms', digits=1, missing='n/a')

    section(f'events ({a.k} containers per runtime and rep)')
    row('SIGKILL sent → shim publishes /tasks/exit (envelope timestamp) (ms)', 'exit_event_ms', digits=3)
    row('SIGKILL sent → `ctr events` prints /tasks/exit (ms)', 'exit_event_recv_ms', digits=3)
    row('SIGKILL sent → exited_at recorded by the shim (ms)', 'exit_stamp_ms', digits=3)
    create = row('/containers/create → /tasks/create event (ms)', 'create_path_ms', digits=1)
    rc = stats(vals, 'runc_create_ms', 'runc')
    if rc:
        rows.append(f'| `runc create` alone, timed directly, same spec (ms) | {rc[0]:.1f} | {rc[1]:.1f} '
                    f'| {rc[0]:.1f} | {rc[1]:.1f} | (same runc) |')
    overhead = {}
    if rc:
        cells = ['create path − `runc create` (medians): the shim\'s overhead plus ctr/containerd\'s (ms)']
        for rt in RT:
            c = create[rt]
            overhead[rt] = c[1] - rc[1] if c else None
            cells += ['', fmt(overhead[rt], 1)]
        cells.append(f"{overhead['embed'] / overhead['runc-v2']:.3g}"
                     if overhead.get('runc-v2') and overhead.get('embed') is not None else '–')
        rows.append('| ' + ' | '.join(cells) + ' |')
    row('/tasks/create → /tasks/start event (ms)', 'create_to_start_ms', digits=1)
    row('shim\'s own time on create: containerd execs the shim → /tasks/create, minus that '
        'container\'s traced `runc create` (ms)', 'shim_create_overhead_ms', digits=2)

    section('ttrpc: containerd.task.v2.Task/State on the shim\'s socket')
    row('State calls/s, 16 connections (3 s)', 'ttrpc_calls_per_s', digits=0)
    row('State latency p50, 1 connection (µs)', 'ttrpc_state_p50_us', digits=1)
    row('State latency p99, 1 connection (µs)', 'ttrpc_state_p99_us', digits=1)

    # Targets.
    def get(metric, rt, n=0, scale=1.0):
        s = stats(vals, metric, rt, n)
        return s[1] * scale if s else None

    targets = []

    def target(name, value, ok, shown):
        status = 'n/a' if value is None else ('PASS' if ok(value) else 'MISS')
        targets.append((name, shown(value) if value is not None else '–', status))

    target('embed shim PSS at N=50 ≤ 4 MiB', get('shim_pss_kib', 'embed', 50, 1 / 1024),
           lambda v: v <= 4, lambda v: f'{v:.2f} MiB')
    target(f'embed marginal private memory per container ≤ 16 KiB (N={lo}→{hi})',
           marginal.get('embed'), lambda v: v <= 16, lambda v: f'{v:.1f} KiB')
    r50, e50 = get('start_all_s', 'runc-v2', 50), get('start_all_s', 'embed', 50)
    target('start all at N=50 ≥ 1.5× faster than runc-v2',
           r50 / e50 if r50 and e50 else None, lambda v: v >= 1.5,
           lambda v: f'{v:.2f}× ({r50:.2f} s vs {e50:.2f} s)')
    target('embed exit → /tasks/exit median ≤ 0.5 ms', get('exit_event_ms', 'embed'),
           lambda v: v <= 0.5, lambda v: f'{v:.3f} ms')
    target('embed shim overhead on create ≤ 3 ms (shim exec → /tasks/create − traced `runc create`)',
           get('shim_create_overhead_ms', 'embed'), lambda v: v <= 3, lambda v: f'{v:.2f} ms')
    if a.big > 0:
        target(f'embed RSS at {a.big} containers ≤ 16 MiB (sum of VmRSS of all its processes)',
               get('big_rss_kib', 'embed', a.big, 1 / 1024), lambda v: v <= 16,
               lambda v: f'{v:.1f} MiB')
        target(f'embed State p99 at {a.big} containers ≤ 2 ms',
               get('big_state_p99_us', 'embed', a.big, 1 / 1000), lambda v: v <= 2,
               lambda v: f'{v:.3f} ms')

    big_rows = []
    if a.big > 0:
        b = a.big

        def brow(label, metric, scale=1.0, digits=1):
            v = get(metric, 'embed', b, scale)
            big_rows.append(f'| {label} | {fmt(v, digits)} |')

        brow(f'start all {b} (s)', 'big_start_all_s', digits=1)
        brow('shim processes', 'big_procs', digits=0)
        brow('RSS (VmRSS), all shim processes (MiB)', 'big_rss_kib', 1 / 1024)
        brow('PSS, all shim processes (MiB)', 'big_pss_kib', 1 / 1024)
        brow('USS, all shim processes (MiB)', 'big_uss_kib', 1 / 1024)
        for name in sorted({m.split(':', 1)[1] for (m, rt, n) in vals if m.startswith('big_rss_kib:')}):
            brow(f'RSS of `{name}` alone (MiB)', f'big_rss_kib:{name}', 1 / 1024)
            brow(f'USS of `{name}` alone (MiB)', f'big_uss_kib:{name}', 1 / 1024)
        brow('threads, all shim processes', 'big_threads', digits=0)
        brow('open fds, all shim processes', 'big_fds', digits=0)
        brow('State latency p50, 1 connection, BlockingClient (µs)', 'big_state_p50_us')
        brow('State latency p99, 1 connection, BlockingClient (µs)', 'big_state_p99_us')
        brow('State latency p50, 1 connection, raw blocking socket (µs)', 'big_state_raw_p50_us')
        brow('State latency p99, 1 connection, raw blocking socket (µs)', 'big_state_raw_p99_us')
        brow('State calls/s, 16 connections', 'big_ttrpc_calls_per_s', digits=0)
        brow(f'stop+delete all {b} (s)', 'big_stop_delete_all_s', digits=1)

    machine = dict(m.split('=', 1) for m in a.machine)
    out = []
    out.append('# containerd-shim-embed-v1 vs containerd-shim-runc-v2\n')
    out.append('`bench/compare/run` on one private containerd, both runtimes on the same busybox '
               'rootfs and spec; runtimes alternate within each repetition '
               f'(reps={a.reps}, N in {a.ns}).\n')
    out.append('| machine | |\n|---|---|')
    for key, v in machine.items():
        out.append(f'| {key} | {v} |')
    out.append('\n## Targets\n')
    out.append('| target | measured (median) | |\n|---|---|---|')
    for name, shown, status in targets:
        out.append(f'| {name} | {shown} | **{status}** |')
    out.append('\n## Results (min and median over repetitions or samples)\n')
    out.append('| metric | runc-v2 min | runc-v2 median | embed min | embed median | embed ÷ runc-v2 (medians) |')
    out.append('|---|---|---|---|---|---|')
    out.extend(rows)
    if big_rows:
        out.append(f'\n## {a.big} containers on embed only (one run)\n')
        out.append('| metric | embed |\n|---|---|')
        out.extend(big_rows)
    if a.png_name:  # none when section 1 did not run (--phases)
        out.append(f'\n![shim PSS and start-all time vs N]({a.png_name})\n')
    out.append(METHOD)
    with open(a.md, 'w') as f:
        f.write('\n'.join(out) + '\n')

    with open(a.plot_data, 'w') as f:
        f.write('# N runc_pss_mib embed_pss_mib runc_start_s embed_start_s\n')
        for n in ns:
            vs = [get('shim_pss_kib', 'runc-v2', n, 1 / 1024), get('shim_pss_kib', 'embed', n, 1 / 1024),
                  get('start_all_s', 'runc-v2', n), get('start_all_s', 'embed', n)]
            f.write(f'{n} ' + ' '.join('NaN' if v is None else f'{v:.4f}' for v in vs) + '\n')

    print('targets:')
    for name, shown, status in targets:
        print(f'  {status:4}  {name}: {shown}')
    return 0


METHOD = """## What was measured

- **One containerd** (1.6, private root/state/socket in a temp dir, under `tini -s`, CRI
  disabled) serves both runtimes; our shim is on its PATH. Every container is
  `ctr run -d --runtime R --fifo-dir <tmp> --env PATH=/bin --rootfs <busybox-static dir> ID sleep 100000`
  (real stdio fifos, as `ctr run -d` makes them). Runtimes alternate (runc-v2 first in odd reps,
  embed first in even ones). Before each measured round, no shim process of this containerd is
  left (our daemon exits 1 s after its last container is deleted), so every round of embed
  includes starting its daemon.
- **start all N**: wall time of N sequential `ctr run -d` (each is a whole ctr process: container
  create, task create, start).
- **shim PSS / USS**: 1 s after the last start, summed over every process whose argv holds
  `-address <this containerd's socket>` (runc-v2 shims and our daemon), from
  `/proc/PID/smaps_rollup`: Pss, and USS = Private_Clean + Private_Dirty. Not host-wide.
- **stop+delete all N**: `ctr task kill -s SIGKILL` for each, poll `ctr task ls` until none runs,
  then one `ctr task rm ID...` and one `ctr container rm ID...`.
- **marginal USS per container**: (median USS at the larger N − median USS at the smaller N) /
  difference in N.
- **run to exit**: wall time of `ctr run --rm ... sh -c 'exit 0'` (start, exit, wait, delete).
  *Warm*: one other container of the same runtime runs meanwhile (our daemon is up, as on a host
  that runs containers). *Cold*: no shim process of this containerd exists before it (our
  daemon is spawned for it; runc-v2 always spawns a shim anyway).
- **exec to exit**: wall time of `ctr task exec --fifo-dir <tmp> --exec-id ID <task> true` (a
  whole ctr process: Exec, Start, Wait, Delete of the exec process) on one running container per
  runtime; `--exec-runs` samples per runtime and rep after one warm-up, the two runtimes taking
  turns sample by sample. A failed exec is counted and left out; a runtime with no successful
  exec shows n/a.
- **exit → event**: with `ctr events` subscribed, each of K running containers is killed from the
  benchmark with `kill(pid, SIGKILL)`; t0 = CLOCK_REALTIME just before the syscall. Reported:
  t0 → the /tasks/exit envelope timestamp (set by the shim when it publishes; both shims stamp
  the envelope at publish time, same host clock) — this is the target metric; t0 → the moment
  `ctr events` printed the line (adds containerd's forwarding and the gRPC stream); t0 → the
  event's `exited_at` (runc-v2 stamps it when it reaps the child; ours is the kernel's exit time
  from the BPF program).
- **create path**: /containers/create envelope timestamp (containerd, when the container record
  is made) → /tasks/create envelope timestamp (the shim, after `runc create` returned). It
  covers ctr's NewTask RPC, containerd writing the bundle and running `<shim> start`, the
  connection, the Create RPC with `runc create`, and the publish. **`runc create` alone** is
  timed directly (fork to exit, from Python) on a bundle made from the config.json containerd
  wrote for one of these containers (own id and cgroup path), with the flags the shims pass
  (`--log ... --log-format json create --bundle B --pid-file ...`); `runc delete -f` between runs
  is not timed. **Overhead** = median create path − median `runc create`: the shim's share plus
  ctr/containerd's (the latter is the same for both runtimes), so an upper bound on the shim's.
- **shim's own time on create** (the target): per container, from the moment containerd
  executes the shim binary (`start`; the `sched_process_exec` tracepoint, recorded system-wide
  with `perf record` while the containers are created one by one) to the /tasks/create
  envelope timestamp, minus that same container's `runc create` (its exec → the exit of its
  last thread, same trace). Only processes descending from this containerd or its running
  shims count. It holds the shim's exec and `start`, containerd reading the address and
  dialing, the Create RPC around `runc create`, and the publish; not ctr, and not
  containerd's work before it runs the shim.
- **ttrpc State**: `build/bench/ttrpc/bench_ttrpc --socket <the task's address file> --service
  containerd.task.v2.Task --method State --payload-hex <StateRequest{id}>`: 16 connections
  (one BlockingClient per thread) calling back to back for 3 s, and the latency of one
  connection. Our shim is reached through its per-namespace socket (containerd 1.6 sends no
  namespace metadata). The client runs on the same 2-core host, so calls/s is bounded by it too.
- **N big**: N containers on embed only; VmRSS/PSS/USS of its processes (summed, and each alone)
  2 s after the last start, and State on one container's socket (1 connection: 20000 calls after
  2000 warmup; the target uses the BlockingClient's p99).
- **failures**: a `ctr run --rm` that fails is counted and left out of the times; a `ctr task rm`
  that containerd refuses because runc still sees the container running (after the shim
  reported its exit) is retried after 50 ms, counted, and its time stays in stop+delete.
"""

if __name__ == '__main__':
    sys.exit(main())
