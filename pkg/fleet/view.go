package fleet

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// rewatchDelay is the pause before a failed watch is opened again.
const rewatchDelay = 250 * time.Millisecond

// View is a proxy's in-memory picture of the media fleet, kept current by
// watching the fleet bucket. Reads never touch the bus, so choosing a node
// costs nothing and survives a short bus outage.
type View struct {
	kv       jetstream.KeyValue
	bus      *bus.Client
	log      zerolog.Logger
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	nodes map[string]*member

	// onLeave is told, outside the lock, of each node that left.
	onLeave func(nodeID string)

	gaugeNodes    prometheus.Gauge
	gaugeTotal    prometheus.Gauge
	gaugeUsed     prometheus.Gauge
	gaugeDraining prometheus.Gauge
}

// member is one node as this view knows it.
type member struct {
	status *callgridv1.NodeStatus
	seen   time.Time // when this view last heard from the node
	// pending counts units this process claimed since the node's last
	// status write: the view's own claims are visible before the next
	// heartbeat reports them.
	pending int
	// refusedUntil: the node said full or draining; skip it until its next
	// status write or this time, whichever is first.
	refusedUntil time.Time
}

// ViewOption tunes a View.
type ViewOption func(*View)

// WithLeaveHandler is called once for every node that leaves the view: it
// said goodbye, its key expired, or it went silent for its TTL. A proxy uses
// it to hang up the calls a dead node held. It runs on the view's goroutine:
// hand long work off.
func WithLeaveHandler(f func(nodeID string)) ViewOption {
	return func(v *View) { v.onLeave = f }
}

// NewView returns a view over the fleet bucket kv. interval is the nodes'
// heartbeat interval: a node not heard from for TTLHeartbeats of them is
// treated as gone even if its expiry marker was missed.
func NewView(c *bus.Client, kv jetstream.KeyValue, interval time.Duration, log zerolog.Logger, reg prometheus.Registerer, opts ...ViewOption) *View {
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	v := &View{
		kv: kv, bus: c, interval: interval, now: time.Now,
		log:   log.With().Str("component", "fleet_view").Logger(),
		nodes: make(map[string]*member),
		gaugeNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_fleet_nodes", Help: "Media nodes in this process's fleet view.",
		}),
		gaugeTotal: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_fleet_capacity_units", Help: "Capacity units of the live media fleet.",
		}),
		gaugeUsed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_fleet_used_units", Help: "Capacity units in use across the live media fleet.",
		}),
		gaugeDraining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_fleet_draining_nodes", Help: "Media nodes that are draining.",
		}),
	}
	reg.MustRegister(v.gaugeNodes, v.gaugeTotal, v.gaugeUsed, v.gaugeDraining)
	for _, o := range opts {
		o(v)
	}
	return v
}

// Run keeps the view current until ctx ends, re-opening the watch after
// errors (a restarted bus, a recreated bucket).
func (v *View) Run(ctx context.Context) error {
	sweep := time.NewTicker(v.interval)
	defer sweep.Stop()
	failures := 0
	for ctx.Err() == nil {
		err := v.watch(ctx, sweep.C, &failures)
		if ctx.Err() != nil {
			return nil
		}
		failures++
		ev := v.log.Debug()
		if failures == 1 {
			ev = v.log.Warn()
		}
		ev.Err(err).Int("failures", failures).Msg("fleet watch ended; reopening")
		select {
		case <-ctx.Done():
		case <-time.After(rewatchDelay):
		}
	}
	return nil
}

func (v *View) watch(ctx context.Context, sweep <-chan time.Time, failures *int) error {
	reconnected := v.bus.Reconnected()
	w, err := v.kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			// A restarted server may have lost the in-memory bucket that
			// nodes are now recreating: watch it afresh.
			return errors.New("bus reconnected")
		case <-sweep:
			v.expireStale()
		case entry, ok := <-w.Updates():
			if !ok {
				return errors.New("watch channel closed")
			}
			if entry == nil { // end of the initial values
				*failures = 0
				continue
			}
			v.apply(entry)
		}
	}
}

func (v *View) apply(entry jetstream.KeyValueEntry) {
	id := entry.Key()
	if entry.Operation() != jetstream.KeyValuePut {
		v.remove([]string{id}, entry.Operation().String())
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	st := new(callgridv1.NodeStatus)
	if err := proto.Unmarshal(entry.Value(), st); err != nil || st.GetNodeId() != id {
		v.log.Warn().Err(err).Str("key", id).Msg("ignoring undecodable node status")
		return
	}
	m, ok := v.nodes[id]
	if !ok {
		m = &member{}
		v.nodes[id] = m
		v.log.Info().Str("node_id", id).Str("rtp_address", st.GetRtpAddress()).Uint32("capacity", st.GetCapacityTotal()).Msg("media node joined the fleet")
	}
	m.status, m.seen, m.pending, m.refusedUntil = st, v.now(), 0, time.Time{}
	v.updateGauges()
}

// expireStale drops nodes not heard from for their TTL: the safety net for
// an expiry marker lost while the bus was away.
func (v *View) expireStale() {
	v.mu.Lock()
	cutoff := v.now().Add(-TTLHeartbeats * v.interval)
	var stale []string
	for id, m := range v.nodes {
		if m.seen.Before(cutoff) {
			stale = append(stale, id)
		}
	}
	v.mu.Unlock()
	v.remove(stale, "silent")
}

// remove drops nodes from the view and tells the leave handler about each
// that was there.
func (v *View) remove(ids []string, why string) {
	var gone []string
	v.mu.Lock()
	for _, id := range ids {
		if _, ok := v.nodes[id]; ok {
			delete(v.nodes, id)
			gone = append(gone, id)
			v.log.Info().Str("node_id", id).Str("reason", why).Msg("media node left the fleet")
		}
	}
	v.updateGauges()
	v.mu.Unlock()
	if v.onLeave != nil {
		for _, id := range gone {
			v.onLeave(id)
		}
	}
}

func (v *View) updateGauges() {
	var total, used, draining float64
	for _, m := range v.nodes {
		total += float64(m.status.GetCapacityTotal())
		used += float64(m.status.GetCapacityUsed())
		if m.status.GetDraining() {
			draining++
		}
	}
	v.gaugeNodes.Set(float64(len(v.nodes)))
	v.gaugeTotal.Set(total)
	v.gaugeUsed.Set(used)
	v.gaugeDraining.Set(draining)
}

// Nodes returns a copy of every node's last status, sorted by id.
func (v *View) Nodes() []*callgridv1.NodeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]*callgridv1.NodeStatus, 0, len(v.nodes))
	for _, m := range v.nodes {
		out = append(out, proto.CloneOf(m.status))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetNodeId() < out[j].GetNodeId() })
	return out
}

// Has reports whether node id is in the view.
func (v *View) Has(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.nodes[id]
	return ok
}

// noteClaimed records units this process just claimed on a node.
func (v *View) noteClaimed(id string, units int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m, ok := v.nodes[id]; ok {
		m.pending += units
	}
}

// noteRefused records that a node refused a claim for lack of capacity.
func (v *View) noteRefused(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m, ok := v.nodes[id]; ok {
		m.refusedUntil = v.now().Add(v.interval)
	}
}
