#!/usr/bin/env python3
"""Writes a linker symbol-ordering file from uprobe_count.py's counts.

  order.py COUNTS_DIR BINARY MAP OUT [STACKS]

BINARY is the profiled executable, MAP its lld link map (-Wl,-Map). The
functions called between the snaps `serving` and `end` (the steady state:
requests, exits, events, idle exit) are listed, most called first, for
ld.lld --symbol-ordering-file, which places the input sections that define
them first in .text, together.

lld orders sections by symbol name. A local name (`_M_construct<char
const*>.isra.0`) may be defined in many objects, and Debian's archives
(libprotobuf.a, absl) are not built with -ffunction-sections, so one such
name can drag in a whole object's .text (descriptor.o: 200 KiB). A name is
left out when it would bring in an input section larger than 4 KiB that holds
no steady-state function.

STACKS, a file of code addresses (gdb's backtraces of every thread once the
daemon serves), adds the functions that never return: the event loop, the
workers' wait loops. They were entered before serving, so no count shows them.
"""
import bisect
import collections
import re
import subprocess
import sys

BIG_SECTION = 4096


def counts(path, binary):
    out = {}
    for line in open(path):
        b, addr, size, calls, name = line.rstrip('\n').split('\t', 4)
        if b == binary:
            out[int(addr, 16)] = (int(size), int(calls), name)
    return out


def input_sections(map_path):
    """(start, size) of every input section in .text of an lld map."""
    secs = []
    in_text = False
    for line in open(map_path):
        m = re.match(r'\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s(\s*)(\S.*)$', line)
        if not m:
            continue
        # lld indents output sections by 0, input sections by 8, symbols by 16.
        depth, what = len(m.group(3)), m.group(4)
        if depth == 0:
            in_text = what == '.text'
        elif in_text and depth == 8:
            secs.append((int(m.group(1), 16), int(m.group(2), 16)))
    secs.sort()
    return secs


def main():
    counts_dir, binary, map_path, out_path = sys.argv[1:5]
    name = binary.rsplit('/', 1)[-1]
    before = counts(f'{counts_dir}/serving.tsv', name)
    after = counts(f'{counts_dir}/end.tsv', name)
    steady = {a: (s, c - before[a][1], n) for a, (s, c, n) in after.items() if c > before[a][1]}

    secs = input_sections(map_path)
    starts = [s for s, _ in secs]

    def section(addr):
        i = bisect.bisect_right(starts, addr) - 1
        return secs[i] if i >= 0 and addr < secs[i][0] + secs[i][1] else None

    where = collections.defaultdict(list)
    sized = []  # (address, size, name)
    nm = subprocess.run(['nm', '-S', '--defined-only', binary], capture_output=True, text=True,
                        check=True)
    for line in nm.stdout.splitlines():
        p = line.split(' ', 3)
        if len(p) == 4 and p[2] in 'tTwW':
            where[p[3]].append(int(p[0], 16))
            sized.append((int(p[0], 16), int(p[1], 16), p[3]))
    if len(sys.argv) > 5:
        for pc in (int(a, 16) for a in open(sys.argv[5]).read().split()):
            for a, size, fn in sized:
                if a <= pc < a + size:
                    steady[a] = (size, 1 << 62, fn)  # first
    hot = {section(a) for a in steady}

    names, seen, dropped = [], set(), 0
    for _, calls, fn in sorted(steady.values(), key=lambda v: (-v[1], v[2])):
        if fn in seen:
            continue
        seen.add(fn)
        drags = [s for s in map(section, where[fn]) if s and s not in hot and s[1] > BIG_SECTION]
        if drags:
            dropped += 1
            continue
        names.append(fn)
    with open(out_path, 'w') as f:
        f.write(''.join(n + '\n' for n in names))
    size = sum(s for s, _, _ in steady.values())
    print(f'{out_path}: {len(names)} functions ({size / 1024:.0f} KiB called at steady state); '
          f'{dropped} names left out (they would drag in cold code)')


if __name__ == '__main__':
    main()
