/* The few kernel types and fields the exit monitor reads, nothing else.
 * preserve_access_index makes clang record every field access as a CO-RE
 * relocation, so libbpf resolves the real offsets from the running kernel's
 * BTF at load time: the layout written here does not need to match. */
#pragma once

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;          /* threads not yet past do_exit's decrement */
	unsigned int flags;     /* SIGNAL_GROUP_EXIT once exit_group/fatal signal */
	int group_exit_code;    /* wait status of a group exit */
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	int exit_code;          /* wait status of this thread's own exit */
	unsigned long long start_boottime;
	struct task_struct *group_leader;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

/* include/linux/sched/signal.h; unchanged since it was introduced. */
#define SIGNAL_GROUP_EXIT 0x00000004
