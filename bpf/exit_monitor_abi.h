/* Layout of the exit monitor's maps and ring buffer events, shared by the BPF
 * program and user space. Any change alters the BPF object, hence its hash and
 * pin directory, so pins of one layout are never read with another. */
#pragma once

#include <linux/types.h>

#define EM_MAX_TRACKED 8192
#define EM_MAX_EXITED 8192
#define EM_RINGBUF_BYTES (64 * 1024)  // a notification only: records stay in `exited`

/* /proc/<pid>/stat gives start times in USER_HZ (100 on Linux) ticks, so a
 * start_boottime from user space is only exact to a tick; compare at that
 * resolution. */
#define EM_TICK_NS 10000000ULL

/* tracked: tgid -> entry. */
struct em_tracked {
	__u64 start_boottime; /* ns since boot; guards against pid reuse */
	__u32 spawner;        /* 0, or the tgid whose budget lets children inherit */
	__s32 budget;         /* on the spawner's own entry: descendants it may still add */
};

/* Set in em_exit.flags when the exited map was full: the ring buffer event is
 * then the only copy. */
#define EM_EXIT_NOT_STORED 1u

/* exited: tgid -> record; also the ring buffer event. */
struct em_exit {
	__u32 pid;
	__u32 status;         /* as wait(2) would report it */
	__u64 start_boottime; /* exact, from the kernel */
	__u64 exit_boottime;  /* bpf_ktime_get_boot_ns() at group death */
	__u32 flags;
	__u32 reserved;
};

/* stats: a single-entry array of drop counters, so no loss is silent. */
struct em_stats {
	__u64 ringbuf_full;
	__u64 exited_full;
	__u64 tracked_full;
};
