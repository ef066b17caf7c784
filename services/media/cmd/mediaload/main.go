// Command mediaload measures one media node under load: it starts an
// embedded NATS server and the media node binary as a child process,
// claims bridged calls through the fleet claimer as a proxy would, plays
// both legs' RTP endpoints on loopback (50 packets/s per leg), and steps the
// number of calls up until packets are lost or latency passes a limit. It
// reports calls per core of the node's own CPU, the latency the node adds,
// and the node's allocations per forwarded packet, for passthrough
// (PCMU↔PCMU) and transcoded (PCMU↔Opus) calls, beside the codec-only
// limit of a transcoded call measured in the same run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	"callgrid.dev/services/media/internal/codec"
)

type options struct {
	node             string
	modes            []mode
	steps            map[mode][]int
	warmup, window   time.Duration
	idle, drain      time.Duration
	maxP99, goalP99  time.Duration
	sockets          int
	slot             time.Duration
	portMin, portMax int
	maxTime          time.Duration
	headroom         float64
	retries          int
	nodeCPUs         string
	nodeIdle         string
}

func parseFlags() (options, error) {
	var o options
	modes := flag.String("modes", "passthrough,transcode", "modes to run, in order")
	pass := flag.String("passthrough-steps", "100,250,500,750,1000,1250,1500,1750,2000,2500,3000", "call counts of the passthrough steps")
	trans := flag.String("transcode-steps", "25,50,75,100,125,150,200,250,300,400", "call counts of the transcode steps")
	flag.StringVar(&o.node, "node", "", "media node binary (built with -tags nolibopusfile)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "traffic before each measured window")
	flag.DurationVar(&o.window, "window", 10*time.Second, "measured window of each step")
	flag.DurationVar(&o.idle, "idle", time.Second, "idle interval per step measuring the node's background allocations (at least 5 s when transcoding)")
	flag.DurationVar(&o.drain, "drain", 300*time.Millisecond, "wait after a step's last packet before counting")
	flag.DurationVar(&o.maxP99, "max-p99", 10*time.Millisecond, "a step whose p99 added latency exceeds this fails (and ends the mode)")
	flag.DurationVar(&o.goalP99, "goal-p99", time.Millisecond, "latency goal: calls per core are also reported for the last step within it")
	flag.DurationVar(&o.slot, "slot", time.Millisecond, "pacing slot: each 20 ms frame's packets are sent in bursts this far apart")
	flag.IntVar(&o.sockets, "sockets", 4, "generator UDP sockets the endpoints share")
	flag.IntVar(&o.portMin, "port-min", 12000, "node RTP port range start (keep below the ephemeral range)")
	flag.IntVar(&o.portMax, "port-max", 27999, "node RTP port range end")
	flag.DurationVar(&o.maxTime, "max-time", 7*time.Minute, "hard bound of the whole run")
	flag.Float64Var(&o.headroom, "headroom", 0.7, "fraction of measured capacity the suggested defaults use")
	flag.IntVar(&o.retries, "retries", 1, "repeats per mode of a step that failed on latency alone")
	flag.StringVar(&o.nodeCPUs, "node-cpus", "auto", `CPUs of the node under test, the generator getting the others: "auto" (the first CPU, when there are two or more), "none" (both share every CPU) or a list such as "0" or "0-1"`)
	flag.StringVar(&o.nodeIdle, "node-idle", "halt", `what the node's own CPUs do while it has nothing to run: "halt" (the machine's own idle) or "poll" (a SCHED_IDLE spinner keeps them from halting, as idle=poll does in a tuned guest)`)
	flag.Parse()
	if o.nodeIdle != "poll" && o.nodeIdle != "halt" {
		return o, fmt.Errorf("-node-idle: want poll or halt, got %q", o.nodeIdle)
	}
	if o.node == "" {
		return o, fmt.Errorf("-node: the media node binary is required")
	}
	o.steps = map[mode][]int{}
	for _, name := range strings.Split(*modes, ",") {
		m, err := parseMode(strings.TrimSpace(name))
		if err != nil {
			return o, fmt.Errorf("-modes: %w", err)
		}
		o.modes = append(o.modes, m)
	}
	for m, s := range map[mode]string{modePassthrough: *pass, modeTranscode: *trans} {
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return o, fmt.Errorf("-%s-steps: bad call count %q", m, f)
			}
			o.steps[m] = append(o.steps[m], n)
		}
	}
	if o.slot < 50*time.Microsecond || o.slot > frameMillis*time.Millisecond {
		return o, fmt.Errorf("-slot: want 50µs to %d ms, got %s", frameMillis, o.slot)
	}
	if o.sockets < 2 {
		return o, fmt.Errorf("-sockets: need at least 2, got %d", o.sockets)
	}
	return o, nil
}

func main() {
	if cpus := os.Getenv(idlePollerEnv); cpus != "" {
		if err := runIdlePoller(cpus, os.Getenv(idlePollerLimitEnv)); err != nil {
			fmt.Fprintf(os.Stderr, "mediaload: %v\n", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mediaload: %v\n", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "mediaload: %v\n", err)
		os.Exit(1)
	}
}

// generator is everything on the load side that outlives one mode.
type generator struct {
	claimer   *fleet.Claimer
	view      *fleet.View
	natsURL   string
	media     *preparedMedia
	opus      codec.OpusOptions
	socks     []*endpointSocket
	receivers []*receiver
	pacer     *pacer
	cpus      cpuPlan
	poller    *idlePoller
	byPort    [65536]atomic.Pointer[stream]
	measuring atomic.Bool
	dir       string
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.maxTime)
	defer cancel()

	// Pinned before the server and the sockets start their threads, which
	// inherit the mask.
	cpus, err := planCPUs(o.nodeCPUs)
	if err != nil {
		return err
	}
	if err := cpus.pinGenerator(); err != nil {
		return err
	}
	if cpus.pinned {
		// The runtime counted this process's CPUs before they were cut
		// down: with more processors than CPUs, the pacer's thread is
		// preempted by the receivers' between the clock read that stamps
		// a send and the send, which the stamps would count as the node's.
		runtime.GOMAXPROCS(cpus.gen.Count())
	}
	var poller *idlePoller
	if cpus.pinned && o.nodeIdle == "poll" {
		if poller, err = startIdlePoller(cpus, o.maxTime); err != nil {
			return err
		}
		defer poller.stop()
	}

	dir, err := os.MkdirTemp("", "mediaload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.WarnLevel).With().Timestamp().Logger()

	nats, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: dir + "/nats"})
	if err != nil {
		return err
	}
	defer nats.Shutdown()
	reg := prometheus.NewRegistry()
	client, err := bus.Connect(ctx, bus.Config{URL: nats.URL(), RequestTimeout: 2 * time.Second}, "mediaload", log, reg)
	if err != nil {
		return err
	}
	defer client.Close()
	kv, err := fleet.OpenBucket(ctx, client, 0, 0)
	if err != nil {
		return err
	}
	g := &generator{natsURL: nats.URL(), dir: dir, pacer: newPacer(o.slot), cpus: cpus, poller: poller}
	g.view = fleet.NewView(client, kv, 0, log, reg)
	g.claimer = fleet.NewClaimer(client, g.view, fleet.ClaimConfig{AttemptTimeout: 2 * time.Second}, log, reg)

	opus := codec.DefaultOpusOptions()
	g.opus = opus
	if g.media, err = prepareMedia(opus); err != nil {
		return err
	}

	rep := &report{opts: o, opus: opus, cpus: cpus, idlePolled: poller != nil, started: time.Now()}
	rep.machine()
	for _, m := range o.modes {
		if m == modeTranscode {
			fmt.Fprintln(os.Stderr, "measuring codec-only cost of a transcoded call")
			var co codecOnly
			err := cpus.onNodeCPUs(func() (err error) {
				co, err = measureCodecOnly(g.media, opus, 1, 5, 1000)
				return err
			})
			if err != nil {
				return err
			}
			rep.codec = &co
		}
	}

	genCtx, stopGen := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopGen()
		wg.Wait()
		for _, s := range g.socks {
			s.close()
		}
	}()
	wg.Go(func() { _ = g.view.Run(genCtx) })
	for range o.sockets {
		s, err := openEndpointSocket()
		if err != nil {
			return err
		}
		g.socks = append(g.socks, s)
		g.receivers = append(g.receivers, newReceiver(s, &g.byPort, &g.measuring))
	}
	wg.Go(func() {
		if err := pollReceivers(genCtx, g.receivers, recvPoll); err != nil {
			log.Error().Err(err).Msg("receiver stopped")
		}
	})
	wg.Go(func() { g.pacer.run(genCtx) })

	for _, m := range o.modes {
		if ctx.Err() != nil {
			break
		}
		res, err := g.runMode(ctx, o, m)
		rep.modes = append(rep.modes, res)
		if err != nil {
			res.err = err
			fmt.Fprintf(os.Stderr, "%s: %v\n", m, err)
		}
	}
	rep.finished = time.Now()
	rep.print(os.Stdout)
	if ctx.Err() != nil {
		return fmt.Errorf("run cut short: %w", context.Cause(ctx))
	}
	return nil
}

// runMode runs one mode's steps against a fresh node.
func (g *generator) runMode(ctx context.Context, o options, m mode) (*modeResult, error) {
	res := &modeResult{mode: m}
	id := "mediaload-" + m.String()
	var node *nodeProcess
	err := g.cpus.onNodeCPUs(func() (err error) {
		node, err = startNode(ctx, nodeSettings{binary: o.node, id: id, natsURL: g.natsURL, portMin: o.portMin, portMax: o.portMax, dir: g.dir})
		return err
	})
	if err != nil {
		return res, err
	}
	defer func() {
		node.stop()
		waitFor(ctx, 5*time.Second, func() bool { return !g.view.Has(id) })
	}()
	if !waitFor(ctx, 10*time.Second, func() bool { return g.view.Has(id) }) {
		return res, fmt.Errorf("node %s never appeared in the fleet view", id)
	}
	cs := &callSet{claimer: g.claimer, mode: m, media: g.media, socks: g.socks, pacer: g.pacer, byPort: &g.byPort}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		lost, err := cs.releaseAll(rctx)
		res.nodeReportedLost = lost
		if err != nil {
			res.err = err
		}
	}()
	maxCalls := (o.portMax - o.portMin + 1) / 4
	retries := o.retries
	for _, n := range o.steps[m] {
		if ctx.Err() != nil {
			res.stopped = "time bound reached"
			break
		}
		if n > maxCalls {
			res.stopped = fmt.Sprintf("next step (%d calls) exceeds the node's port range (%d calls)", n, maxCalls)
			break
		}
		fmt.Fprintf(os.Stderr, "%s: %d calls\n", m, n)
		st, err := g.runStep(ctx, o, node, cs, n)
		if err != nil {
			return res, err
		}
		res.steps = append(res.steps, st)
		fmt.Fprintf(os.Stderr, "  %s\n", st.summary())
		if !st.pass && st.latencyOnly() && retries > 0 {
			// The machine is shared: a latency spike from someone else's
			// build gets one more try; loss never does.
			retries--
			st.why += " (repeated)"
			fmt.Fprintf(os.Stderr, "%s: %d calls again\n", m, n)
			if st, err = g.runStep(ctx, o, node, cs, n); err != nil {
				return res, err
			}
			res.steps = append(res.steps, st)
			fmt.Fprintf(os.Stderr, "  %s\n", st.summary())
		}
		if !st.pass {
			res.stopped = fmt.Sprintf("%d calls: %s", n, st.why)
			break
		}
	}
	if !node.alive() {
		return res, fmt.Errorf("media node died: %s", node.logTail())
	}
	return res, nil
}

// genCounters are the generator's cumulative packet counts.
type genCounters struct {
	sent, sendErrors, received, reordered, negative, unknown uint64
}

func (g *generator) counters() genCounters {
	c := genCounters{sent: g.pacer.sent.Load(), sendErrors: g.pacer.sendErrors.Load()}
	for _, r := range g.receivers {
		c.received += r.received.Load()
		c.reordered += r.reordered.Load()
		c.unknown += r.unknown.Load()
	}
	return c
}

type cpuSample struct {
	at            time.Time
	node, gen     time.Duration
	busy, total   time.Duration
	nodeSteal     time.Duration
	nodeErr       error
	pacerLateTick uint64
}

func (g *generator) sampleCPU(node *nodeProcess) cpuSample {
	s := cpuSample{at: time.Now(), pacerLateTick: g.pacer.late.Load()}
	s.node, s.nodeErr = procCPU(node.pid())
	s.gen, _ = procCPU(0)
	s.busy, s.total, _ = systemCPU()
	// The idle poller's time is idle time of the node's CPUs.
	s.busy -= g.poller.cpu()
	s.nodeSteal = stealOf(g.cpus.node)
	return s
}

// runStep holds n calls, sends their traffic for warmup + window and
// measures the window.
func (g *generator) runStep(ctx context.Context, o options, node *nodeProcess, cs *callSet, n int) (*stepResult, error) {
	if err := cs.grow(ctx, n); err != nil {
		return nil, err
	}
	// Idle with the calls held: the node's background allocations (its
	// heartbeat, session clocks, the scrape itself).
	mA, err := node.scrape()
	if err != nil {
		return nil, err
	}
	mB, err := node.scrape()
	if err != nil {
		return nil, err
	}
	idle := o.idle
	if cs.mode == modeTranscode {
		// Transcoded legs get an RTCP report from the node every 5 s,
		// which allocates; idle over a whole interval to average it out.
		idle = max(idle, rtcpReportInterval)
	}
	idleStart := time.Now()
	sleep(ctx, idle)
	mC, err := node.scrape()
	if err != nil {
		return nil, err
	}
	idleFor := time.Since(idleStart)

	// The machine's speed drifts by tens of percent within minutes (other
	// tenants, frequency): a transcode step is compared with the codec
	// work measured just before and just after it, not only at the start.
	var before, after codecAround
	if cs.mode == modeTranscode {
		if before, err = g.measureCodecAround(n); err != nil {
			return nil, err
		}
	}

	g0 := g.counters()
	rcvbuf0 := udpRcvbufErrors()
	trafficStart := time.Now()
	g.pacer.running.Store(true)
	sleep(ctx, o.warmup)
	for _, r := range g.receivers {
		r.takeHistogram()
	}
	g.measuring.Store(true)
	c0 := g.sampleCPU(node)
	var (
		during    []time.Duration
		duringErr error
		stopCodec = make(chan struct{})
		codecDone = make(chan struct{})
	)
	if cs.mode == modeTranscode {
		go func() {
			defer close(codecDone)
			duringErr = g.cpus.onNodeCPUs(func() (err error) {
				during, err = sampleCodecDuring(g.media, g.opus, codecSampleInterval, stopCodec)
				return err
			})
		}()
	} else {
		close(codecDone)
	}
	sleep(ctx, o.window)
	c1 := g.sampleCPU(node)
	close(stopCodec)
	<-codecDone
	g.measuring.Store(false)
	if duringErr != nil {
		g.pacer.running.Store(false)
		return nil, duringErr
	}
	if err := ctx.Err(); err != nil {
		g.pacer.running.Store(false)
		return nil, fmt.Errorf("step of %d calls cut short: %w", n, context.Cause(ctx))
	}
	g.pacer.running.Store(false)
	sleep(ctx, o.drain)
	if cs.mode == modeTranscode {
		if after, err = g.measureCodecAround(n); err != nil {
			return nil, err
		}
	}
	mD, err := node.scrape()
	if err != nil {
		return nil, err
	}
	trafficFor := time.Since(trafficStart)
	g1 := g.counters()
	hist := newHistogram()
	for _, r := range g.receivers {
		hist.merge(r.takeHistogram())
	}
	if c0.nodeErr != nil || c1.nodeErr != nil {
		return nil, fmt.Errorf("node cpu: %w", errors.Join(c0.nodeErr, c1.nodeErr))
	}

	st := &stepResult{
		calls:      n,
		wall:       c1.at.Sub(c0.at),
		nodeCPU:    c1.node - c0.node,
		genCPU:     c1.gen - c0.gen,
		sysBusy:    c1.busy - c0.busy,
		sysTotal:   c1.total - c0.total,
		nodeSteal:  c1.nodeSteal - c0.nodeSteal,
		nodeCPUs:   g.cpus.node.Count(),
		sent:       g1.sent - g0.sent,
		sendErrors: g1.sendErrors - g0.sendErrors,
		received:   g1.received - g0.received,
		reordered:  g1.reordered - g0.reordered,
		unknown:    g1.unknown - g0.unknown,
		nodeIn:     uint64(mD.packetsIn - mC.packetsIn),
		nodeOut:    uint64(mD.packetsOut - mC.packetsOut),
		nodeDrops:  mD.dropTotal() - mC.dropTotal(),
		rcvbufErrs: udpRcvbufErrors() - rcvbuf0,
		lateSlots:  c1.pacerLateTick - c0.pacerLateTick,
		hist:       hist,
		gcCycles:   mD.gcCycles - mC.gcCycles,
		heapInUse:  mD.heapInUse,
		goroutines: mD.goroutines,
	}
	scrapeAllocs := mB.mallocs - mA.mallocs
	background := max(0, (mC.mallocs-mB.mallocs)-scrapeAllocs) / idleFor.Seconds()
	st.allocsRaw = mD.mallocs - mC.mallocs
	st.allocsNet = st.allocsRaw - scrapeAllocs - background*trafficFor.Seconds()
	st.backgroundAllocsPerSec = background
	if cs.mode == modeTranscode {
		st.codec = &[2]codecAround{before, after}
		st.codecDuring = during
	}
	st.judge(o)
	return st, nil
}

// The codec-only measurement around each transcode step: five short
// rounds, a tenth of a second of codec work, either side.
const (
	codecRoundsPerStep  = 5
	codecFramesPerRound = 200
)

// codecSampleInterval is how often the codec-only cost is sampled during a
// transcode step: short rounds (sampleCodecDuring), often, so that a 10 s
// window still has 160 of them.
const codecSampleInterval = 62500 * time.Microsecond

// codecAround is the codec-only cost measured beside a transcode step: with
// one call's state kept hot, and cycling through the states of as many
// calls as the step holds.
type codecAround struct{ hot, all codecOnly }

func (g *generator) measureCodecAround(calls int) (c codecAround, err error) {
	err = g.cpus.onNodeCPUs(func() error {
		if c.hot, err = measureCodecOnly(g.media, g.opus, 1, codecRoundsPerStep, codecFramesPerRound); err != nil {
			return err
		}
		c.all, err = measureCodecOnly(g.media, g.opus, calls, codecRoundsPerStep, codecFramesPerRound)
		return err
	})
	return c, err
}

// rtcpReportInterval is how often the node reports on a stream it
// terminates (engine.rtcpInterval).
const rtcpReportInterval = 5 * time.Second

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func waitFor(ctx context.Context, limit time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return true
}
