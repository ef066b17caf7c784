package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuPlan splits the CPUs this process may run on between the node under
// test and the generator. Sharing every core, the two take turns on them:
// a node's event loop waits behind the generator's sends for a scheduler
// slice, which shows up as the node's latency and, through lost cache and
// cross-core wake-ups, as its CPU per packet. In production the phones
// are other machines; a node on cores of its own (Kubernetes' static CPU
// manager, a cpuset) is what the benchmark then measures.
type cpuPlan struct {
	node, gen unix.CPUSet
	pinned    bool
}

// planCPUs reads -node-cpus: "auto" gives the node the first CPU this
// process may use and the generator the rest (on one CPU nothing is
// pinned), "none" pins nothing, and a list ("0", "0,2", "0-1") gives the
// node those CPUs and the generator the others.
func planCPUs(spec string) (cpuPlan, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return cpuPlan{}, fmt.Errorf("read this process's CPUs: %w", err)
	}
	plan := cpuPlan{node: all, gen: all}
	switch spec {
	case "none":
		return plan, nil
	case "auto":
		if all.Count() < 2 {
			return plan, nil
		}
		plan.node.Zero()
		plan.node.Set(cpusOf(all)[0])
	default:
		ids, err := parseCPUList(spec)
		if err != nil {
			return cpuPlan{}, fmt.Errorf("-node-cpus: %w", err)
		}
		plan.node.Zero()
		for _, id := range ids {
			if !all.IsSet(id) {
				return cpuPlan{}, fmt.Errorf("-node-cpus: CPU %d is not one this process may use (%v)", id, cpusOf(all))
			}
			plan.node.Set(id)
		}
	}
	for _, id := range cpusOf(plan.node) {
		plan.gen.Clear(id)
	}
	if plan.gen.Count() == 0 {
		return cpuPlan{}, fmt.Errorf("-node-cpus: %q leaves the generator no CPU", spec)
	}
	plan.pinned = true
	return plan, nil
}

// parseCPUList reads a list like "0,2-3".
func parseCPUList(spec string) ([]int, error) {
	var ids []int
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		first, err := strconv.Atoi(lo)
		if err != nil || first < 0 {
			return nil, fmt.Errorf("bad CPU %q", part)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return nil, fmt.Errorf("bad CPU range %q", part)
			}
		}
		for id := first; id <= last; id++ {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func cpusOf(set unix.CPUSet) []int {
	var ids []int
	for id := range len(set) * 64 {
		if set.IsSet(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (p cpuPlan) String() string {
	if !p.pinned {
		return "node and generator share every CPU"
	}
	return fmt.Sprintf("node pinned to CPU %s, generator to CPU %s", cpuList(p.node), cpuList(p.gen))
}

func cpuList(set unix.CPUSet) string {
	ids := cpusOf(set)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.Itoa(id)
	}
	return strings.Join(parts, ",")
}

// pinGenerator moves every thread of this process to the generator's
// CPUs; threads made later inherit the mask of the thread that makes them.
func (p cpuPlan) pinGenerator() error {
	if !p.pinned {
		return nil
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list this process's threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &p.gen); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d to CPU %s: %w", tid, cpuList(p.gen), err)
		}
	}
	return nil
}

// onNodeCPUs runs f on a thread moved to the node's CPUs for the time of
// f, then moved back. A child started by f inherits the node's CPUs (a
// fork takes the mask of the thread that forks); codec work measured by f
// is measured on the cores the node runs on.
func (p cpuPlan) onNodeCPUs(f func() error) error {
	if !p.pinned {
		return f()
	}
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &p.node); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("move to the node's CPU %s: %w", cpuList(p.node), err)
	}
	ferr := f()
	if err := unix.SchedSetaffinity(0, &p.gen); err != nil {
		// The thread stays locked to this goroutine, so no other one runs
		// on the node's CPUs; the run stops on this error.
		return fmt.Errorf("move back to the generator's CPU %s: %w", cpuList(p.gen), err)
	}
	runtime.UnlockOSThread()
	return ferr
}
