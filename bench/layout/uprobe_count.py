#!/usr/bin/env python3
"""Counts the calls of every function of some binaries.

  uprobe_count.py OUTDIR BINARY[:ONLY]... -- COMMAND...

Opens one counting uprobe (perf_event_open, the kernel's "uprobe" PMU) on the
entry of every function symbol of each BINARY (or only of those whose address
is listed in the file ONLY, one hex address a line: registering a uprobe
takes the kernel a few ms), on every CPU, then runs COMMAND. The counters see
every process that runs these files (the kernel cannot inherit a uprobe
event into a forked process), so give it copies that only the process tree
under study runs.

Then it reads commands on stdin, one a line:
  snap NAME   write OUTDIR/NAME.tsv: binary, address, size, calls so far, symbol
  quit
and prints "ok NAME" after each snap. Stdlib only; needs root.
"""
import ctypes
import os
import resource
import subprocess
import sys

PERF_EVENT_OPEN = 298  # x86-64
FD_CLOEXEC = 1 << 3    # PERF_FLAG_FD_CLOEXEC


class Attr(ctypes.Structure):
    _fields_ = [('type', ctypes.c_uint32), ('size', ctypes.c_uint32),
                ('config', ctypes.c_uint64), ('sample_period', ctypes.c_uint64),
                ('sample_type', ctypes.c_uint64), ('read_format', ctypes.c_uint64),
                ('flags', ctypes.c_uint64), ('wakeup_events', ctypes.c_uint32),
                ('bp_type', ctypes.c_uint32), ('config1', ctypes.c_uint64),
                ('config2', ctypes.c_uint64), ('rest', ctypes.c_uint8 * 64)]


def functions(binary):
    """(address, size, name, file offset) of every sized function in an executable segment."""
    segs = []
    out = subprocess.run(['readelf', '-lW', binary], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        p = line.split()
        if p and p[0] == 'LOAD' and 'E' in p[6:-1]:
            segs.append((int(p[2], 16), int(p[1], 16), int(p[4], 16)))
    seen = set()
    out = subprocess.run(['nm', '-S', '--defined-only', binary], capture_output=True, text=True,
                         check=True)
    for line in out.stdout.splitlines():
        p = line.split(' ', 3)
        if len(p) != 4 or p[2] not in 'tTwW':
            continue
        addr, size = int(p[0], 16), int(p[1], 16)
        if not size or addr in seen:
            continue
        seg = next((s for s in segs if s[0] <= addr < s[0] + s[2]), None)
        if seg:
            seen.add(addr)
            yield addr, size, p[3], addr - seg[0] + seg[1]


def main():
    sep = sys.argv.index('--')
    outdir, binaries, command = sys.argv[1], sys.argv[2:sep], sys.argv[sep + 1:]
    os.makedirs(outdir, exist_ok=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    libc = ctypes.CDLL(None, use_errno=True)
    pmu = int(open('/sys/bus/event_source/devices/uprobe/type').read())
    probes = []  # (binary, addr, size, name, fd)
    paths = []  # kept alive: the kernel reads them at each open
    failed = 0
    targets = []  # symbols first: no fork once perf fds are open
    for spec in binaries:
        binary, _, only_file = spec.partition(':')
        only = {int(a, 16) for a in open(only_file).read().split()} if only_file else None
        targets.append((binary, [f for f in functions(binary) if only is None or f[0] in only]))
    for binary, funcs in targets:
        path = ctypes.create_string_buffer(os.path.realpath(binary).encode())
        paths.append(path)
        for addr, size, name, offset in funcs:
            attr = Attr(type=pmu, size=112, config=0, config1=ctypes.addressof(path),
                        config2=offset)
            fds = []
            for cpu in range(os.cpu_count()):
                fd = libc.syscall(PERF_EVENT_OPEN, ctypes.byref(attr), -1, cpu, -1, FD_CLOEXEC)
                if fd < 0:
                    if ctypes.get_errno() == 24:  # EMFILE
                        sys.exit(f'uprobe_count: out of fds after {len(probes)} probes')
                    break
                fds.append(fd)
            if len(fds) < os.cpu_count():
                failed += 1
                for fd in fds:
                    os.close(fd)
                continue
            probes.append((binary, addr, size, name, fds))
    print(f'probes {len(probes)} failed {failed}', flush=True)
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ['quit']:
            break
        if cmd[:1] == ['snap'] and len(cmd) == 2:
            with open(os.path.join(outdir, cmd[1] + '.tsv'), 'w') as f:
                for binary, addr, size, name, fds in probes:
                    calls = sum(int.from_bytes(os.read(fd, 8), 'little') for fd in fds)
                    f.write(f'{os.path.basename(binary)}\t{addr:x}\t{size}\t{calls}\t{name}\n')
            print(f'ok {cmd[1]}', flush=True)
    if child.poll() is None:
        child.wait()


if __name__ == '__main__':
    main()
