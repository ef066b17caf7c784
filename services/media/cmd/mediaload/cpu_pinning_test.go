package main

import (
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCPUListsAreRead(t *testing.T) {
	for spec, want := range map[string][]int{"0": {0}, "0,2": {0, 2}, "1-3": {1, 2, 3}, "0, 4-5": {0, 4, 5}} {
		got, err := parseCPUList(spec)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", spec, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "3-1", "1-"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) accepted", bad)
		}
	}
}

func TestNodeAndGeneratorGetDisjointCPUs(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	plan, err := planCPUs("auto")
	if err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		if plan.pinned {
			t.Fatal("pinned on one CPU")
		}
		return
	}
	if !plan.pinned || plan.node.Count() != 1 || plan.gen.Count() != all.Count()-1 {
		t.Fatalf("auto on %d CPUs: %s", all.Count(), plan)
	}
	for _, id := range cpusOf(plan.node) {
		if plan.gen.IsSet(id) {
			t.Fatalf("CPU %d given to both: %s", id, plan)
		}
	}
	if _, err := planCPUs(cpuList(all)); err == nil {
		t.Fatal("a plan leaving the generator no CPU was accepted")
	}
	if plan, err := planCPUs("none"); err != nil || plan.pinned {
		t.Fatalf("none: %s, %v", plan, err)
	}
}

func TestChildStartedOnTheNodesCPUsInheritsThem(t *testing.T) {
	plan, err := planCPUs("auto")
	if err != nil {
		t.Fatal(err)
	}
	if !plan.pinned {
		t.Skip("one CPU: nothing is pinned")
	}
	// Held across the call, so the thread that ran it is the one checked
	// after it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var out []byte
	err = plan.onNodeCPUs(func() (err error) {
		out, err = exec.Command("grep", "Cpus_allowed_list", "/proc/self/status").Output()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(strings.TrimPrefix(string(out), "Cpus_allowed_list:")); got != cpuList(plan.node) {
		t.Fatalf("child runs on CPUs %q, want %q", got, cpuList(plan.node))
	}
	var after unix.CPUSet
	if err := unix.SchedGetaffinity(0, &after); err != nil {
		t.Fatal(err)
	}
	if after != plan.gen {
		t.Fatalf("afterwards the thread runs on CPUs %v, want the generator's %v", cpusOf(after), cpusOf(plan.gen))
	}
}
