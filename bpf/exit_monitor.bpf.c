// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
/* Exit monitor: reports the death of tracked processes (thread groups) with
 * their wait status. See bpf/README.md for the rules. */
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "bpf/kernel_types.h"
#include "bpf/exit_monitor_abi.h"

/* The verifier refuses to let a non-GPL-compatible program read task_struct,
 * hence the GPL alternative for this one file. */
char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EM_MAX_TRACKED);
	__type(key, __u32);
	__type(value, struct em_tracked);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EM_MAX_EXITED);
	__type(key, __u32);
	__type(value, struct em_exit);
} exited SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EM_RINGBUF_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct em_stats);
} stats SEC(".maps");

static __always_inline struct em_stats *get_stats(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline bool same_start(__u64 a, __u64 b)
{
	return a / EM_TICK_NS == b / EM_TICK_NS;
}

/* Called once the whole thread group is dead. */
static __always_inline void report_exit(struct task_struct *p)
{
	__u32 tgid = p->tgid;
	struct em_tracked *t = bpf_map_lookup_elem(&tracked, &tgid);
	if (!t)
		return;
	/* The leader stays a zombie until the group is reaped, so it is still
	 * there; start_boottime of the group is the leader's. */
	struct task_struct *leader = p->group_leader;
	__u64 start = leader->start_boottime;
	if (!same_start(t->start_boottime, start))
		return; /* the pid now belongs to someone else: not ours */
	/* Exactly once: only the caller whose delete succeeds reports. */
	if (bpf_map_delete_elem(&tracked, &tgid))
		return;

	struct signal_struct *sig = p->signal;
	struct em_exit e = {
		.pid = tgid,
		.start_boottime = start,
		.exit_boottime = bpf_ktime_get_boot_ns(),
	};
	e.status = (sig->flags & SIGNAL_GROUP_EXIT) ? sig->group_exit_code
						    : leader->exit_code;

	struct em_stats *s = get_stats();
	/* Map first, then event: an event always finds its record stored. */
	if (bpf_map_update_elem(&exited, &tgid, &e, BPF_ANY)) {
		e.flags |= EM_EXIT_NOT_STORED;
		if (s)
			__sync_fetch_and_add(&s->exited_full, 1);
	}
	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) && s)
		__sync_fetch_and_add(&s->ringbuf_full, 1);
}

/* Linux >= 6.16: the tracepoint says whether the group is dead. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_group_dead_arg, struct task_struct *p, bool group_dead)
{
	if (group_dead)
		report_exit(p);
	return 0;
}

/* Older kernels: do_exit has already decremented signal->live when the
 * tracepoint fires, so 0 means this was the last thread. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_signal_live, struct task_struct *p)
{
	if (p->signal->live.counter == 0)
		report_exit(p);
	return 0;
}

/* Tracking passes from a spawner to the processes it and its descendants
 * fork, drawing on the spawner's budget, so an exec'd process that exits at
 * once is still caught. The tracepoint fires before the child first runs. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid != child->tgid)
		return 0; /* a new thread, not a new process */
	__u32 ptgid = parent->tgid;
	struct em_tracked *t = bpf_map_lookup_elem(&tracked, &ptgid);
	if (!t || !t->spawner)
		return 0;
	if (!same_start(t->start_boottime, parent->group_leader->start_boottime))
		return 0; /* stale entry of a previous owner of this pid */

	__u32 root_pid = t->spawner;
	struct em_tracked *root = root_pid == ptgid ? t : bpf_map_lookup_elem(&tracked, &root_pid);
	if (!root)
		return 0; /* the spawner is gone or untracked: inheritance ends */
	if (__sync_fetch_and_sub(&root->budget, 1) <= 0)
		return 0;

	struct em_tracked c = {
		.start_boottime = child->start_boottime,
		.spawner = root_pid,
	};
	__u32 ctgid = child->tgid;
	if (bpf_map_update_elem(&tracked, &ctgid, &c, BPF_ANY)) {
		struct em_stats *s = get_stats();
		if (s)
			__sync_fetch_and_add(&s->tracked_full, 1);
	}
	return 0;
}
