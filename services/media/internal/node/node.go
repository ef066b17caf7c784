// Package node is a media node's control layer: it advertises the node's
// capacity to the fleet, serves offer/answer/update/delete over the bus,
// keeps the capacity ledger and drains on shutdown. The media engine behind
// the Media interface carries the audio.
package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// drainPoll is how often a draining node checks whether its calls ended.
const drainPoll = 100 * time.Millisecond

// requestDrainTimeout bounds the wait, once a stopping node has stopped
// taking requests, for those it had already received to be answered. They
// carry their requesters' deadlines, a second or less (the claimer's
// attempt timeout, the bus request timeout), and the handlers give up
// with them; one still running after this is stuck, and waiting longer
// would only keep the node from ending its calls.
const requestDrainTimeout = 5 * time.Second

// writesFlushTimeout bounds the wait, once a stopping node has ended its
// calls, for their ends and record removals to be written before it says
// goodbye. A node that leaves the fleet with records still in the bucket
// has them taken by a proxy, which hangs those calls up again and
// publishes second ends for them; past this the bus is too slow or away,
// and the goodbye (and, failing it, the key's expiry) goes out anyway.
const writesFlushTimeout = 30 * time.Second

// Node is one media node on the bus.
type Node struct {
	cfg     Config
	bus     *bus.Client
	media   Media
	log     zerolog.Logger
	ledger  *ledger
	writer  *busWriter
	metrics *metrics
	started time.Time
	ports   func() (used, total int)

	heartbeat *fleet.Heartbeat
	hardStop  chan struct{}
	stopOnce  sync.Once
	// requestDrain is requestDrainTimeout, shorter in tests.
	requestDrain time.Duration
	// writesFlush is writesFlushTimeout, shorter in tests.
	writesFlush time.Duration
	// handoverFor is handoverRetryFor, shorter in tests.
	handoverFor time.Duration
	// openCalls opens the calls bucket; tests wrap it to have it fail.
	openCalls func(context.Context) (jetstream.KeyValue, error)
}

// Option tunes a Node.
type Option func(*Node)

// WithPortUsage reports the engine's RTP port pool in the node's status.
func WithPortUsage(f func() (used, total int)) Option {
	return func(n *Node) { n.ports = f }
}

// New returns a node serving media through m.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer, c *bus.Client, m Media, opts ...Option) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	log = log.With().Str("node_id", cfg.ID).Logger()
	n := &Node{
		cfg: cfg, bus: c, media: m, log: log,
		ledger:   newLedger(cfg.CapacityUnits),
		writer:   newBusWriter(c, log, queueSizeFor(cfg)),
		started:  time.Now(),
		ports:    func() (int, int) { return 0, 0 },
		hardStop: make(chan struct{}),

		requestDrain: requestDrainTimeout,
		writesFlush:  writesFlushTimeout,
		handoverFor:  handoverRetryFor,
		openCalls: func(ctx context.Context) (jetstream.KeyValue, error) {
			return fleet.OpenCallsBucket(ctx, c, 0)
		},
	}
	n.metrics = newMetrics(reg, func() float64 { return float64(n.ledger.snapshot().transcoded) })
	for _, o := range opts {
		o(n)
	}
	n.metrics.capacity.Set(float64(cfg.CapacityUnits))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "callgrid_media_capacity_used_units", Help: "Capacity units held by this node's sessions.",
	}, func() float64 { return float64(n.ledger.snapshot().used) }))
	return n, nil
}

// Status is what the node advertises to the fleet right now.
func (n *Node) Status() *callgridv1.NodeStatus {
	s := n.ledger.snapshot()
	used, total := n.ports()
	return &callgridv1.NodeStatus{
		NodeId:             n.cfg.ID,
		RtpAddress:         n.cfg.AdvertiseAddress,
		CapacityTotal:      uint32(s.total),
		CapacityUsed:       uint32(s.used),
		ActiveSessions:     uint32(s.sessions),
		TranscodedSessions: uint32(s.transcoded),
		Draining:           s.draining,
		Codecs:             n.cfg.Codecs,
		Version:            n.cfg.Version,
		StartedUnixMs:      n.started.UnixMilli(),
		PassthroughCost:    uint32(n.cfg.PassthroughCost),
		TranscodeCost:      uint32(n.cfg.TranscodeCost),
		PortsUsed:          uint32(used),
		PortsTotal:         uint32(total),
	}
}

// Draining reports whether the node has stopped taking new sessions.
func (n *Node) Draining() bool { return n.ledger.snapshot().draining }

// Drain stops taking new sessions and tells the fleet at once.
func (n *Node) Drain() {
	if n.ledger.setDraining() {
		n.log.Info().Int("sessions", n.ledger.snapshot().sessions).Msg("draining: no new sessions")
		n.metrics.draining.Set(1)
		if n.heartbeat != nil {
			n.heartbeat.Beat()
		}
	}
}

// StopNow ends a drain at once: every remaining session is closed.
func (n *Node) StopNow() { n.stopOnce.Do(func() { close(n.hardStop) }) }

// Run serves the node until ctx ends, then drains: existing sessions go on
// until they end, the drain grace passes or StopNow is called; then the
// node stops taking requests and answers those it has, whatever is left is
// closed, the node leaves the fleet, the engine shuts down and Run returns.
func (n *Node) Run(ctx context.Context) error {
	setup, cancelSetup := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSetup()
	if _, err := n.bus.EnsureEventsStream(setup); err != nil {
		return err
	}
	kv, err := fleet.OpenBucket(setup, n.bus, n.cfg.HeartbeatInterval, 0)
	if err != nil {
		return err
	}
	if n.writer.calls, err = n.openCalls(setup); err != nil {
		return err
	}
	var wg sync.WaitGroup
	writerCtx, stopWriter := context.WithCancel(context.Background())
	wg.Go(func() { n.writer.run(writerCtx) })
	// Not bounded by setup: a previous run may have left thousands of
	// calls, and the handover bounds itself (handoverRetryFor).
	n.handOverPreviousCalls(ctx)
	if ctx.Err() != nil {
		// Stopped before serving: the node never joined the fleet, and
		// must not now, if only for a heartbeat. The calls it did not
		// hand over stay recorded, for its next run or for the proxies,
		// which take them once the previous run's status expires.
		stopWriter()
		wg.Wait()
		n.media.Shutdown()
		n.log.Info().Msg("media node stopped before serving")
		return nil
	}
	subs, err := n.serve()
	if err != nil {
		stopWriter()
		wg.Wait()
		return err
	}

	reapCtx, stopReaping := context.WithCancel(context.Background())
	wg.Go(func() { n.reapUnanswered(reapCtx) })

	// A status written once the stop began, before Run gets to Drain,
	// offers nothing either.
	status := func() *callgridv1.NodeStatus {
		st := n.Status()
		st.Draining = st.GetDraining() || ctx.Err() != nil
		return st
	}
	n.heartbeat = fleet.NewHeartbeat(n.bus, kv, n.cfg.ID, n.cfg.HeartbeatInterval, status, n.log)
	hbCtx, stopHeartbeat := context.WithCancel(context.Background())
	wg.Go(func() { _ = n.heartbeat.Run(hbCtx) })
	n.log.Info().Int("capacity_units", n.cfg.CapacityUnits).Str("rtp_address", n.cfg.AdvertiseAddress).Msg("media node serving")

	<-ctx.Done()
	n.Drain()
	n.waitForCalls()
	// The requests come to an end before the calls: what is already in
	// hand gets its answer (a delete its quality, an offer DRAINING),
	// and no handler is left inside the engine when it shuts down.
	n.stopServing(subs)
	n.closeAll("shutdown")
	// The goodbye only once the ends are out and the records gone: to the
	// proxies a node that left is one whose records are orphans.
	n.flushWrites()
	stopHeartbeat()
	stopReaping()
	stopWriter()
	wg.Wait()
	n.media.Shutdown()
	n.log.Info().Msg("media node stopped")
	return nil
}

// flushWrites waits, up to writesFlush, for the writes queued so far.
func (n *Node) flushWrites() {
	ctx, cancel := context.WithTimeout(context.Background(), n.writesFlush)
	defer cancel()
	if err := n.writer.flush(ctx); err != nil {
		n.log.Warn().Err(err).Int("queued", len(n.writer.ch)+len(n.writer.bucket)).Dur("timeout", n.writesFlush).Msg("leaving the fleet with call ends not all written")
	}
}

// reapUnanswered ends sessions that never got a final answer within
// SetupTimeout. A proxy releases every call it gives up on, but it may die
// between the offer and the answer, or its release may be lost while the
// bus is away; without this the session would hold its units and ports
// until the node restarts.
func (n *Node) reapUnanswered(ctx context.Context) {
	tick := time.NewTicker(min(max(n.cfg.SetupTimeout/4, 10*time.Millisecond), 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cutoff := now.Add(-n.cfg.SetupTimeout)
			for _, id := range n.ledger.unansweredSince(cutoff) {
				// Checked again as it is released: a final answer may
				// have come since the list was made.
				s, ok := n.ledger.releaseUnansweredSince(id, cutoff)
				if !ok {
					continue
				}
				n.endReleased(s, causeSetupTimeout, false)
				n.log.Warn().Str("call_id", s.callID).Str("session_id", id).Dur("setup_timeout", n.cfg.SetupTimeout).Msg("session never answered: ended")
			}
		}
	}
}

func (n *Node) waitForCalls() {
	deadline := time.NewTimer(n.cfg.DrainGrace)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		left := n.ledger.snapshot().sessions
		if left == 0 {
			return
		}
		if time.Since(lastLog) > 10*time.Second {
			n.log.Info().Int("sessions", left).Msg("draining: waiting for calls to end")
			lastLog = time.Now()
		}
		select {
		case <-deadline.C:
			n.log.Warn().Int("sessions", left).Dur("grace", n.cfg.DrainGrace).Msg("drain grace over: ending remaining calls")
			return
		case <-n.hardStop:
			n.log.Warn().Int("sessions", left).Msg("stopping now: ending remaining calls")
			return
		case <-tick.C:
		}
	}
}

// stopServing stops taking requests and waits, up to requestDrain, for
// the handlers to answer those already received. Whatever arrives from
// then on finds no responder, and a claimer moves to the next node at
// once. Even a hard stop waits: the engine must not shut down under a
// handler, and the handlers end with their requests' deadlines.
func (n *Node) stopServing(subs []*bus.Subscription) {
	ctx, cancel := context.WithTimeout(context.Background(), n.requestDrain)
	defer cancel()
	if err := bus.Drain(ctx, subs...); err != nil {
		n.log.Warn().Err(err).Dur("timeout", n.requestDrain).Msg("stop serving: requests not all answered")
	}
}

// closeAll ends every session, with cause, publishing their end events.
// The answered ones are calls still up: the proxies are asked to hang them
// up.
func (n *Node) closeAll(cause string) {
	for _, id := range n.ledger.ids() {
		n.endSession(id, cause, true)
	}
}

func (n *Node) serve() ([]*bus.Subscription, error) {
	var subs []*bus.Subscription
	add := func(s *bus.Subscription, err error) error {
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return err
		}
		subs = append(subs, s)
		return nil
	}
	id := n.cfg.ID
	if err := add(bus.Serve(n.bus, bus.MediaSubject(id, bus.OpOffer), "", "offer", n.handleOffer)); err != nil {
		return nil, err
	}
	if err := add(bus.Serve(n.bus, bus.MediaSubject(id, bus.OpAnswer), "", "answer", n.handleAnswer)); err != nil {
		return nil, err
	}
	if err := add(bus.Serve(n.bus, bus.MediaSubject(id, bus.OpUpdate), "", "update", n.handleUpdate)); err != nil {
		return nil, err
	}
	if err := add(bus.Serve(n.bus, bus.MediaSubject(id, bus.OpDelete), "", "delete", n.handleDelete)); err != nil {
		return nil, err
	}
	return subs, nil
}

var errDeadline = errors.New("request deadline passed before the node got to it")
