package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary be the idle poller's child, as mediaload is.
func TestMain(m *testing.M) {
	if cpus := os.Getenv(idlePollerEnv); cpus != "" {
		if err := runIdlePoller(cpus, os.Getenv(idlePollerLimitEnv)); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestIdlePollerSpinsAtIdlePriorityOnTheNodesCPUAndStops(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	cpu := cpusOf(all)[0]
	plan := cpuPlan{pinned: true}
	plan.node.Set(cpu)
	plan.gen = all
	poller, err := startIdlePoller(plan, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(poller.stop)
	pid := poller.cmd.Process.Pid

	// It spins whenever the CPU has nothing else to run.
	deadline := time.Now().Add(10 * time.Second)
	for poller.cpu() < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("poller used %s of CPU in 10 s", poller.cpu())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every thread it has runs at SCHED_IDLE on the node's CPU only.
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatalf("thread %d: %v", tid, err)
		}
		if attr.Policy != unix.SCHED_IDLE {
			t.Errorf("thread %d has policy %d, want SCHED_IDLE", tid, attr.Policy)
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(cpu) {
			t.Errorf("thread %d may run on CPUs %s, want %d only", tid, cpuList(set), cpu)
		}
	}

	poller.stop()
	if err := unix.Kill(pid, 0); err == nil {
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if !strings.Contains(string(stat), ") Z") {
			t.Fatalf("poller %d still running after stop", pid)
		}
	}
}
