package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// goodbyeTimeout bounds the final delete a stopping node makes so that
// proxies drop it at once instead of waiting for the TTL.
const goodbyeTimeout = time.Second

// reopenTimeout bounds re-creating the fleet bucket after a failed write.
const reopenTimeout = 2 * time.Second

// Heartbeat writes a node's status to the fleet bucket every interval.
type Heartbeat struct {
	bus      *bus.Client
	kv       jetstream.KeyValue
	nodeID   string
	interval time.Duration
	status   func() *callgridv1.NodeStatus
	log      zerolog.Logger
	kick     chan struct{}
}

// NewHeartbeat returns a heartbeat for nodeID whose status comes from
// status, called once per write.
func NewHeartbeat(c *bus.Client, kv jetstream.KeyValue, nodeID string, interval time.Duration, status func() *callgridv1.NodeStatus, log zerolog.Logger) *Heartbeat {
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	return &Heartbeat{
		bus: c, kv: kv, nodeID: nodeID, interval: interval, status: status,
		log:  log.With().Str("component", "heartbeat").Logger(),
		kick: make(chan struct{}, 1),
	}
}

// Beat asks for a write now (a node that starts draining says so at once).
func (h *Heartbeat) Beat() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Run writes the status until ctx ends, then deletes the key and publishes
// a node-down event so proxies stop choosing this node immediately.
func (h *Heartbeat) Run(ctx context.Context) error {
	h.publishUp(ctx)
	ticker := time.NewTicker(h.interval)
	defer ticker.Stop()
	failing := false
	for {
		err := h.write(ctx)
		switch {
		case err != nil && failing:
			h.log.Debug().Err(err).Msg("heartbeat write failed")
		case err != nil && !failing && ctx.Err() == nil:
			h.log.Warn().Err(err).Msg("heartbeat write failed; retrying every interval")
			failing = true
		case err == nil && failing:
			h.log.Info().Msg("heartbeat writes resumed")
			failing = false
		}
		select {
		case <-ctx.Done():
			h.goodbye()
			return nil
		case <-ticker.C:
		case <-h.kick:
		}
	}
}

func (h *Heartbeat) write(ctx context.Context) error {
	if !h.bus.Connected() {
		return bus.ErrUnavailable
	}
	st := h.status()
	st.NodeId = h.nodeID
	st.UpdatedUnixMs = time.Now().UnixMilli()
	st.HeartbeatIntervalMs = uint32(h.interval / time.Millisecond)
	data, err := proto.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode node status: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, h.interval)
	defer cancel()
	_, err = h.kv.Put(wctx, h.nodeID, data)
	if err != nil && h.bus.Connected() && ctx.Err() == nil {
		// A restarted server may have lost the in-memory bucket: create
		// it again (idempotent) so the fleet comes back by itself.
		rctx, rcancel := context.WithTimeout(ctx, max(h.interval, reopenTimeout))
		defer rcancel()
		kv, oerr := OpenBucket(rctx, h.bus, h.interval, 0)
		if oerr != nil {
			return fmt.Errorf("write node status: %w (reopen bucket: %w)", err, oerr)
		}
		h.kv = kv
		_, err = h.kv.Put(rctx, h.nodeID, data)
	}
	if err != nil {
		return fmt.Errorf("write node status: %w", err)
	}
	return nil
}

func (h *Heartbeat) publishUp(ctx context.Context) {
	st := h.status()
	ev := &callgridv1.NodeUp{NodeId: h.nodeID, RtpAddress: st.GetRtpAddress(), Version: st.GetVersion(), UnixMs: time.Now().UnixMilli()}
	if err := h.bus.PublishEvent(ctx, "node_up", bus.SubjectNodeUp, ev); err != nil {
		h.log.Warn().Err(err).Msg("publish node up")
	}
}

func (h *Heartbeat) goodbye() {
	ctx, cancel := context.WithTimeout(context.Background(), goodbyeTimeout)
	defer cancel()
	if err := h.kv.Delete(ctx, h.nodeID); err != nil {
		h.log.Warn().Err(err).Msg("remove node status")
	}
	ev := &callgridv1.NodeDown{NodeId: h.nodeID, Reason: "shutdown", UnixMs: time.Now().UnixMilli()}
	if err := h.bus.PublishEvent(ctx, "node_down", bus.SubjectNodeDown, ev); err != nil {
		h.log.Warn().Err(err).Msg("publish node down")
	}
}
