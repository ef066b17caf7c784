package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// On a virtual machine a CPU with nothing to run halts, and the
// hypervisor may give the physical core to someone else until an
// interrupt wakes it: the node's next packet then waits for the host's
// scheduler, and its caches come back cold. Guests that carry media are
// tuned against this with idle=poll or the haltpoll idle driver, so that
// an idle CPU polls instead of halting. The idle poller does the same from
// user space where the kernel cannot be tuned: a process at SCHED_IDLE
// spinning on each of the node's CPUs, run by the scheduler only when
// nothing else wants the CPU and preempted at once when the node's thread
// wakes. Its CPU is the CPU's idle time, not the node's work, so the
// report leaves it out of the machine's busy time, as the kernel's own
// idle loop is.

// idlePollerEnv names the environment variable that turns this binary into
// the idle poller of the CPUs it lists (the child re-executes this binary).
// idlePollerLimitEnv bounds its life.
const (
	idlePollerEnv      = "MEDIALOAD_IDLE_POLLER_CPUS"
	idlePollerLimitEnv = "MEDIALOAD_IDLE_POLLER_LIMIT"
)

// idlePoller is the running child.
type idlePoller struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startIdlePoller starts the poller on the node's CPUs. It stops when
// stop is called, when this process dies (its stdin closes; it is also
// killed with this process), or after limit.
func startIdlePoller(p cpuPlan, limit time.Duration) (*idlePoller, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("idle poller: find this binary: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), idlePollerEnv+"="+cpuList(p.node), idlePollerLimitEnv+"="+limit.String())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("idle poller: %w", err)
	}
	if err := p.onNodeCPUs(cmd.Start); err != nil {
		return nil, fmt.Errorf("idle poller: start: %w", err)
	}
	return &idlePoller{cmd: cmd, stdin: stdin}, nil
}

// cpu is the poller's CPU time so far.
func (ip *idlePoller) cpu() time.Duration {
	if ip == nil {
		return 0
	}
	d, _ := procCPU(ip.cmd.Process.Pid)
	return d
}

func (ip *idlePoller) stop() {
	if ip == nil {
		return
	}
	_ = ip.stdin.Close()
	done := make(chan struct{})
	go func() { _ = ip.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		_ = ip.cmd.Process.Kill()
		<-done
	}
}

// runIdlePoller is the child's whole life: one spinning thread at
// SCHED_IDLE per listed CPU until stdin closes or the limit passes.
func runIdlePoller(cpuSpec, limitSpec string) error {
	ids, err := parseCPUList(cpuSpec)
	if err != nil {
		return fmt.Errorf("idle poller: %w", err)
	}
	limit, err := time.ParseDuration(limitSpec)
	if err != nil || limit <= 0 {
		return fmt.Errorf("idle poller: bad limit %q", limitSpec)
	}
	// One processor more than spinners, so that waiting for the end
	// never waits for a spinner's preemption.
	runtime.GOMAXPROCS(len(ids) + 1)
	// Every thread the runtime has made so far drops to SCHED_IDLE; the
	// threads it makes later inherit the policy of the thread making them.
	if err := setIdlePolicyOnAllThreads(); err != nil {
		return err
	}
	for _, id := range ids {
		go spinOn(id)
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
	}
	return nil
}

func setIdlePolicyOnAllThreads() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("idle poller: list threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := setIdlePolicy(tid); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}

func setIdlePolicy(tid int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("idle poller: SCHED_IDLE on thread %d: %w", tid, err)
	}
	return nil
}

// spinOn holds a thread on CPU id and keeps it busy for good. A failure
// leaves that CPU to halt as it would without the poller.
func spinOn(id int) {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(id)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		fmt.Fprintf(os.Stderr, "idle poller: CPU %d: %v\n", id, err)
		return
	}
	if err := setIdlePolicy(0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	for {
	}
}
