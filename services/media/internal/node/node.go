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
	if n.writer.calls, err = fleet.OpenCallsBucket(setup, n.bus, 0); err != nil {
		return err
	}
	var wg sync.WaitGroup
	writerCtx, stopWriter := context.WithCancel(context.Background())
	wg.Go(func() { n.writer.run(writerCtx) })
	// Not bounded by setup: a previous run may have left thousands of
	// calls, and the handover bounds itself (handoverRetryFor).
	n.handOverPreviousCalls(ctx)
	subs, err := n.serve()
	if err != nil {
		stopWriter()
		wg.Wait()
		return err
	}

	reapCtx, stopReaping := context.WithCancel(context.Background())
	wg.Go(func() { n.reapUnanswered(reapCtx) })

	n.heartbeat = fleet.NewHeartbeat(n.bus, kv, n.cfg.ID, n.cfg.HeartbeatInterval, n.Status, n.log)
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

// handOverPreviousCalls has the proxies hang up the calls a previous run
// of this node left recorded: a node that crashed and came back under its
// id within the fleet's grace never left the proxies' view, so nothing
// else would. Before it serves, every record under its id is an old one.
// Each goes out as a media timeout, which a proxy acts on by sending BYE to
// both legs, then as its end; the reaper lock keeps a proxy that did see
// the node leave from taking them too. Both are published, and stored by
// the stream, before the record goes, one call at a time: however many
// calls there are, none is dropped as a full write queue would, and a node
// that dies again part way leaves the rest recorded for its next run or a
// proxy (a call whose record outlived its publishing is ended twice, which
// consumers keep once).
//
// A handover that fails is tried again (see handoverAttempts), before the
// node serves so that every record under its id is still an old one: the
// proxies take a node's records only once it leaves the fleet, which a
// node serving again never does, and its next run may come after the
// records' expiry, so nobody else would hang those calls up.
func (n *Node) handOverPreviousCalls(ctx context.Context) {
	// One time for every attempt: a call whose events went out and whose
	// record stayed is published again with the same bytes, which the
	// stream stores once, and it is counted once.
	first, wait := time.Now(), handoverRetryMin
	counted := make(map[string]bool)
	// One taker for every attempt: it takes again a reaper lock that an
	// attempt of its own failed to release, which would otherwise pass
	// for another's and have the next attempt take nothing.
	taker := fleet.NewOrphanTaker(n.writer.calls, n.cfg.ID)
	// The bound holds for the attempts themselves, not only for when they
	// start: one may last up to the lock's own hold, and a handover
	// running late keeps the node from serving.
	bounded, cancel := context.WithDeadline(ctx, first.Add(handoverRetryFor))
	defer cancel()
	for attempt := 1; ; attempt++ {
		taken, err := n.handOverOnce(bounded, taker, first, counted)
		if taken > 0 {
			n.log.Warn().Int("calls", taken).Msg("calls of a previous run of this node: handed to the proxies to hang up")
		}
		if err == nil {
			return
		}
		if attempt >= handoverAttempts || time.Since(first)+wait > handoverRetryFor || bounded.Err() != nil {
			n.log.Warn().Err(err).Int("attempts", attempt).
				Msg("hand over calls of a previous run: the rest stay recorded for the next run or a proxy to hang up")
			return
		}
		n.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("hand over calls of a previous run: retrying")
		select {
		case <-bounded.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// handOverOnce is one handover, at now, of the previous run's calls by
// taker: how many it handed over, and why it stopped short. counted holds
// the sessions whose talk time is counted already.
func (n *Node) handOverOnce(ctx context.Context, taker *fleet.OrphanTaker, now time.Time, counted map[string]bool) (int, error) {
	return taker.Take(ctx, func(ctx context.Context, rec *callgridv1.CallRecord) error {
		if err := n.writer.publishNow(ctx, "media_timeout", bus.SubjectMediaTimeout, &callgridv1.MediaTimeout{
			CallId: rec.GetCallId(), SessionId: rec.GetSessionId(), NodeId: n.cfg.ID, Dialog: rec.GetDialog(), UnixMs: now.UnixMilli(),
		}); err != nil {
			return err
		}
		ended := fleet.NodeDownEnd(rec, now)
		ended.NodeId = n.cfg.ID
		if err := n.writer.publishNow(ctx, "call_ended", bus.SubjectCallEnded, ended); err != nil {
			return err
		}
		if rec.GetAnsweredUnixMs() > 0 && !counted[rec.GetSessionId()] {
			// The run that carried the call died before it could count
			// it; it is counted here, as its end goes out.
			n.metrics.observeCall("node_down", ended.GetDurationSeconds())
			counted[rec.GetSessionId()] = true
		}
		return nil
	})
}

// flushWrites waits, up to writesFlush, for the writes queued so far.
func (n *Node) flushWrites() {
	ctx, cancel := context.WithTimeout(context.Background(), n.writesFlush)
	defer cancel()
	if err := n.writer.flush(ctx); err != nil {
		n.log.Warn().Err(err).Int("queued", len(n.writer.ch)).Dur("timeout", n.writesFlush).Msg("leaving the fleet with call ends not all written")
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
