package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"callgrid.dev/services/media/internal/codec"
)

// stepResult is one step: n calls for one measured window.
type stepResult struct {
	calls int
	wall  time.Duration // measured window
	// CPU time over the window: the node process (user+system, which on
	// loopback includes delivering its own sends into the generator's
	// sockets), the generator process, and the whole machine.
	nodeCPU, genCPU   time.Duration
	sysBusy, sysTotal time.Duration
	// nodeSteal is the time the hypervisor ran something else while the
	// node's CPUs (nodeCPUs of them) wanted to run.
	nodeSteal time.Duration
	nodeCPUs  int

	// Packet counts over the whole traffic period (warm-up, window, drain).
	sent, sendErrors, received, reordered, unknown uint64
	nodeIn, nodeOut                                uint64
	nodeDrops                                      float64
	rcvbufErrs                                     uint64 // machine-wide
	lateSlots                                      uint64

	hist *histogram // added latency of packets received in the window

	allocsRaw, allocsNet   float64
	backgroundAllocsPerSec float64
	gcCycles, heapInUse    float64
	goroutines             float64

	// Transcode steps: the codec-only cost measured just before the
	// traffic and just after it, and in rounds during the window.
	codec       *[2]codecAround
	codecDuring []time.Duration

	pass bool
	why  string
}

// nodeCores is the node's CPU use in cores over the window.
func (s *stepResult) nodeCores() float64 { return s.nodeCPU.Seconds() / s.wall.Seconds() }
func (s *stepResult) genCores() float64  { return s.genCPU.Seconds() / s.wall.Seconds() }
func (s *stepResult) sysCores() float64 {
	return s.sysBusy.Seconds() / s.sysTotal.Seconds() * float64(runtime.NumCPU())
}

// stealShare is the share of the window the hypervisor took the node's
// CPUs away. A stall of a few ms in 1 % of a window is enough to move the
// p99 of every packet waiting behind it.
func (s *stepResult) stealShare() float64 {
	return s.nodeSteal.Seconds() / (s.wall.Seconds() * float64(max(1, s.nodeCPUs)))
}

// callsPerCore is calls ÷ (node CPU seconds per wall second).
func (s *stepResult) callsPerCore() float64 {
	if s.nodeCPU <= 0 {
		return math.Inf(1)
	}
	return float64(s.calls) / s.nodeCores()
}

// lost counts packets that went into the node and did not come out the
// other side, wherever they were lost: before the node read them (its
// socket buffers), in the node (drops), or on the way back.
func (s *stepResult) lost() int64 {
	into := int64(s.sent) - int64(s.nodeIn)
	inside := int64(math.Round(s.nodeDrops))
	out := int64(s.nodeOut) - int64(s.received)
	return max(into, 0) + max(inside, int64(s.nodeIn)-int64(s.nodeOut), 0) + max(out, 0)
}

func (s *stepResult) allocsPerPacket() (raw, net float64) {
	if s.nodeOut == 0 {
		return 0, 0
	}
	return s.allocsRaw / float64(s.nodeOut), max(s.allocsNet, 0) / float64(s.nodeOut)
}

// codecOnlyPerFrame is the codec work of one call per 20 ms around this
// step, with one hot state or with every call's state: the median of the
// rounds measured before and after it, so a burst of someone else's load
// on either side counts once at most.
func (s *stepResult) codecOnlyPerFrame(allStates bool) time.Duration {
	if s.codec == nil {
		return 0
	}
	var rounds []time.Duration
	for _, c := range s.codec {
		if allStates {
			rounds = append(rounds, c.all.rounds...)
		} else {
			rounds = append(rounds, c.hot.rounds...)
		}
	}
	slices.Sort(rounds)
	return rounds[len(rounds)/2]
}

// codecDuringPerFrame is the codec work of one call per 20 ms measured
// during the step (one hot state), the median of its rounds; 0 without.
func (s *stepResult) codecDuringPerFrame() time.Duration {
	if len(s.codecDuring) == 0 {
		return 0
	}
	rounds := slices.Clone(s.codecDuring)
	slices.Sort(rounds)
	return rounds[len(rounds)/2]
}

// codecShareDuring is calls per core ÷ what libopus alone allowed during
// the step.
func (s *stepResult) codecShareDuring() float64 {
	return float64(s.codecDuringPerFrame()) / float64(s.nodePerFrame())
}

// nodePerFrame is the node's CPU per call per 20 ms.
func (s *stepResult) nodePerFrame() time.Duration {
	return time.Duration(float64(frameMillis*time.Millisecond) / s.callsPerCore())
}

// codecShare is calls per core ÷ what libopus alone allows around the step.
func (s *stepResult) codecShare(allStates bool) float64 {
	return float64(s.codecOnlyPerFrame(allStates)) / float64(s.nodePerFrame())
}

// latencyOnly reports whether the step failed on latency with nothing lost.
func (s *stepResult) latencyOnly() bool {
	return !s.pass && s.sendErrors == 0 && s.lost() == 0 && s.hist.count > 0
}

// callsPerCoreWithGenerator charges the generator's CPU to the node too: a
// lower bound that covers the kernel's delivery of the node's incoming
// packets, which loopback charges to the sender.
func (s *stepResult) callsPerCoreWithGenerator() float64 {
	return float64(s.calls) / (s.nodeCores() + s.genCores())
}

func (s *stepResult) judge(o options) {
	switch {
	case s.sendErrors > 0:
		s.why = fmt.Sprintf("generator could not send %d packets", s.sendErrors)
	case s.lost() > 0:
		s.why = fmt.Sprintf("%d packets lost (into node %d, dropped in node %.0f, out of node %d)",
			s.lost(), int64(s.sent)-int64(s.nodeIn), s.nodeDrops, int64(s.nodeOut)-int64(s.received))
	case s.hist.count == 0:
		s.why = "no packet received in the window"
	case s.hist.quantile(0.99) > o.maxP99:
		s.why = fmt.Sprintf("p99 added latency %s over the %s limit", s.hist.quantile(0.99), o.maxP99)
	default:
		s.pass = true
	}
	if s.hist.negative > 0 {
		s.why += fmt.Sprintf("; %d packets matched to a later send (misattributed)", s.hist.negative)
	}
}

func (s *stepResult) summary() string {
	raw, net := s.allocsPerPacket()
	return fmt.Sprintf("node %.2f cores → %.0f calls/core; generator %.2f cores; machine %.2f cores busy; node CPUs stolen %.1f%%; lost %d; p50 %s p99 %s; allocs/pkt %.3f (net %.3f); pacer late %d times; kernel rcvbuf drops (machine-wide) %d; %s",
		s.nodeCores(), s.callsPerCore(), s.genCores(), s.sysCores(), 100*s.stealShare(), s.lost(),
		s.hist.quantile(0.5), s.hist.quantile(0.99), raw, net, s.lateSlots, s.rcvbufErrs, s.verdict())
}

func (s *stepResult) verdict() string {
	if s.pass {
		return "pass" + s.why
	}
	return "FAIL: " + s.why
}

// modeResult is one mode's steps.
type modeResult struct {
	mode             mode
	steps            []*stepResult
	stopped          string
	nodeReportedLost int64 // sum of the legs' lost packets as the node saw them at delete
	err              error
}

// best returns the largest passing step, and the largest passing step
// whose p99 is within goal.
func (m *modeResult) best(goal time.Duration) (best, withinGoal *stepResult) {
	for _, s := range m.steps {
		if !s.pass {
			continue
		}
		best = s
		if s.hist.quantile(0.99) <= goal {
			withinGoal = s
		}
	}
	return best, withinGoal
}

type report struct {
	opts              options
	opus              codec.OpusOptions
	codec             *codecOnly
	modes             []*modeResult
	started, finished time.Time
	cpuModel, load    string
	cpus              cpuPlan
	idlePolled        bool
}

func (r *report) machine() {
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				r.cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.load = strings.Join(strings.Fields(string(data))[:3], " ")
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", d.Seconds()*1000) }
func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1000) }

func (r *report) print(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "# media node load, %s\n\n", r.started.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d cores (%s), load average at start %s; run took %s\n",
		runtime.NumCPU(), r.cpuModel, r.load, r.finished.Sub(r.started).Round(time.Second))
	fmt.Fprintf(w, "CPUs: %s\n", r.cpus)
	if r.cpus.pinned {
		idle := "halt (the machine's own idle)"
		if r.idlePolled {
			idle = "polled by a SCHED_IDLE spinner, as with idle=poll (its CPU is left out of the machine's busy time)"
		}
		fmt.Fprintf(w, "node's CPU when idle: %s\n", idle)
	}
	fmt.Fprintf(w, "steps: %s warm-up + %s measured each; pass = zero loss and p99 ≤ %s; latency goal %s\n",
		o.warmup, o.window, o.maxP99, o.goalP99)
	fmt.Fprintf(w, "opus encoder: complexity %d, %d bps, fec %v, loss %d%%, dtx %v (the node's defaults)\n\n",
		r.opus.Complexity, r.opus.BitrateBPS, r.opus.FEC, r.opus.PacketLossPercent, r.opus.DTX)
	if r.codec != nil {
		fmt.Fprintf(w, "codec-only, one transcoded call per 20 ms (PCMU dec + Opus enc 8 kHz, Opus dec 8 kHz + PCMU enc), thread CPU, median of %d rounds: %.1f µs → %.0f calls per core\n\n",
			len(r.codec.rounds), float64(r.codec.perFrame.Nanoseconds())/1000, r.codec.callsPerCore)
	}
	for _, m := range r.modes {
		fmt.Fprintf(w, "## %s\n\n", m.mode)
		fmt.Fprintln(w, "| calls | node cores | calls/core | calls/core, generator charged too | generator cores | machine busy cores | node CPUs' steal | packets forwarded/s | lost | reordered | p50 | p99 | p99.9 | max | allocs/packet (raw / net) | node GCs | result |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, s := range m.steps {
			raw, net := s.allocsPerPacket()
			fmt.Fprintf(w, "| %d | %.3f | %.0f | %.0f | %.3f | %.2f | %.1f%% | %.0f | %d | %d | %s | %s | %s | %s | %.4f / %.4f | %.0f | %s |\n",
				s.calls, s.nodeCores(), s.callsPerCore(), s.callsPerCoreWithGenerator(), s.genCores(), s.sysCores(), 100*s.stealShare(),
				float64(s.nodeOut)/(s.wall+o.warmup+o.drain).Seconds(), s.lost(), s.reordered,
				ms(s.hist.quantile(0.5)), ms(s.hist.quantile(0.99)), ms(s.hist.quantile(0.999)), ms(time.Duration(s.hist.max)),
				raw, net, s.gcCycles, s.verdict())
		}
		fmt.Fprintln(w)
		if m.mode == modeTranscode {
			fmt.Fprintln(w, "| calls | node CPU per call per 20 ms | codec-only during the step, hot (rounds) | node ÷ during | codec-only around it, one hot state | codec-only around it, every call's state | node ÷ hot around | node ÷ every state around |")
			fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
			for _, s := range m.steps {
				if s.codec == nil {
					continue
				}
				fmt.Fprintf(w, "| %d | %s | %s (%d) | %.0f%% | %s | %s | %.0f%% | %.0f%% |\n", s.calls, us(s.nodePerFrame()),
					us(s.codecDuringPerFrame()), len(s.codecDuring), 100*s.codecShareDuring(),
					us(s.codecOnlyPerFrame(false)), us(s.codecOnlyPerFrame(true)), 100*s.codecShare(false), 100*s.codecShare(true))
			}
			fmt.Fprintln(w)
		}
		best, goal := m.best(o.goalP99)
		if best != nil {
			fmt.Fprintf(w, "largest passing step: %d calls, %.0f calls per core of node CPU (p99 %s)\n", best.calls, best.callsPerCore(), ms(best.hist.quantile(0.99)))
		}
		if goal != nil {
			fmt.Fprintf(w, "largest step within the %s p99 goal: %d calls, %.0f calls per core\n", o.goalP99, goal.calls, goal.callsPerCore())
		}
		if m.mode == modeTranscode && best != nil && best.codec != nil {
			fmt.Fprintf(w, "transcoded calls per core ÷ codec-only calls per core at that step: %.0f%% of the figure measured during it; around it, %.0f%% of one hot state, %.0f%% of every call's state",
				100*best.codecShareDuring(), 100*best.codecShare(false), 100*best.codecShare(true))
			if r.codec != nil {
				fmt.Fprintf(w, " (÷ the hot figure at the start of the run: %.0f%%)", 100*best.callsPerCore()/r.codec.callsPerCore)
			}
			fmt.Fprintln(w)
		}
		if m.stopped != "" {
			fmt.Fprintf(w, "stopped: %s\n", m.stopped)
		}
		fmt.Fprintf(w, "packets the node counted lost on its legs over the whole mode (at delete): %d\n", m.nodeReportedLost)
		if m.err != nil {
			fmt.Fprintf(w, "error: %v\n", m.err)
		}
		fmt.Fprintln(w)
	}
	r.suggest(w)
}

// suggest derives the node's default capacity from the figures: one unit
// is one passthrough call; a transcoded call weighs as many units as the
// passthrough calls its CPU would carry. Given twice: from the largest
// steps without loss, and from the largest steps within the latency goal.
func (r *report) suggest(w io.Writer) {
	cores := runtime.NumCPU()
	for _, useGoal := range []bool{false, true} {
		var pass, trans *stepResult
		for _, m := range r.modes {
			best, goal := m.best(r.opts.goalP99)
			if useGoal {
				best = goal
			}
			switch m.mode {
			case modePassthrough:
				pass = best
			case modeTranscode:
				trans = best
			}
		}
		if pass == nil {
			continue
		}
		basis := fmt.Sprintf("zero loss, p99 ≤ %s", r.opts.maxP99)
		if useGoal {
			basis = fmt.Sprintf("p99 ≤ %s", r.opts.goalP99)
		}
		units := int(math.Floor(pass.callsPerCore()*float64(cores)*r.opts.headroom/100) * 100)
		fmt.Fprintf(w, "suggested defaults (%s; a %d-core node at %.0f%% of measured capacity): capacity_units %d, passthrough_cost 1",
			basis, cores, 100*r.opts.headroom, units)
		if trans != nil {
			fmt.Fprintf(w, ", transcode_cost %d", int(math.Ceil(pass.callsPerCore()/trans.callsPerCore())))
		}
		fmt.Fprintln(w)
	}
}
