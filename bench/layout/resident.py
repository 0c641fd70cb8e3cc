#!/usr/bin/env python3
"""Functions of BINARY that lie on a page of its code that process PID has mapped.

  resident.py PID BINARY OUT

Reads /proc/PID/pagemap (root) for the executable mappings of BINARY and
writes the address of every function symbol overlapping a present page to
OUT, one hex address a line; prints how much code was resident. The kernel
maps up to 64 KiB around each fault, so this is a superset of what ran:
uprobe_count.py then finds which of these functions run.
"""
import os
import struct
import subprocess
import sys

PAGE = 4096


def main():
    pid, binary, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    path = os.path.realpath(binary)
    present = set()
    total = 0
    with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/pagemap', 'rb') as pagemap:
        for line in maps:
            p = line.split()
            if len(p) < 6 or p[5] != path or 'x' not in p[1]:
                continue
            lo, hi = (int(x, 16) for x in p[0].split('-'))
            pagemap.seek(lo // PAGE * 8)
            data = pagemap.read((hi - lo) // PAGE * 8)
            total += hi - lo
            for i in range((hi - lo) // PAGE):
                if struct.unpack_from('<Q', data, i * 8)[0] >> 63:
                    present.add(lo // PAGE + i)
    nm = subprocess.run(['nm', '-S', '--defined-only', binary], capture_output=True, text=True,
                        check=True)
    found = set()
    for line in nm.stdout.splitlines():
        p = line.split(' ', 3)
        if len(p) == 4 and p[2] in 'tTwW' and int(p[1], 16):
            a, s = int(p[0], 16), int(p[1], 16)
            if any(page in present for page in range(a // PAGE, (a + s - 1) // PAGE + 1)):
                found.add(a)
    with open(out, 'w') as f:
        f.write(''.join(f'{a:x}\n' for a in sorted(found)))
    print(f'{os.path.basename(binary)}: {len(present) * PAGE // 1024} KiB of '
          f'{total // 1024} KiB code resident, {len(found)} functions on it')


if __name__ == '__main__':
    main()
