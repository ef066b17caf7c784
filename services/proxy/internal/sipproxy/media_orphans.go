package sipproxy

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

const (
	// orphanPoll is how often nodes that left are checked.
	orphanPoll = 250 * time.Millisecond
	// orphanClaimTimeout bounds taking one dead node's call records.
	orphanClaimTimeout = 5 * time.Second
)

// NodeLeaves collects the media nodes that left the fleet view until the
// server has hung up their calls. Add never blocks: the view calls it on
// its watch goroutine.
type NodeLeaves struct {
	mu sync.Mutex
	// left maps a node id to when it was last seen leaving, or when the
	// bus was last seen away, whichever is later.
	left map[string]time.Time
	now  func() time.Time
}

// NewNodeLeaves returns an empty collection.
func NewNodeLeaves() *NodeLeaves {
	return &NodeLeaves{left: make(map[string]time.Time), now: time.Now}
}

// Add records that nodeID left the fleet.
func (q *NodeLeaves) Add(nodeID string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.left[nodeID] = q.now()
}

// due takes the nodes gone for grace while the bus was up. A node back in
// the fleet is forgotten: a bus restart empties every view for a moment,
// and its nodes come back with their calls intact. While the bus is away
// nothing is due and every clock restarts.
func (q *NodeLeaves) due(grace time.Duration, busUp bool, alive func(string) bool) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	var out []string
	for id, since := range q.left {
		switch {
		case !busUp:
			q.left[id] = now
		case alive(id):
			delete(q.left, id)
		case now.Sub(since) >= grace:
			delete(q.left, id)
			out = append(out, id)
		}
	}
	return out
}

// reapOrphans hangs up the answered calls of nodes that left the fleet,
// until ctx ends. Exactly one replica takes each node's calls.
func (s *Server) reapOrphans(ctx context.Context) {
	t := time.NewTicker(orphanPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		busUp := s.bus == nil || s.bus.Connected()
		for _, id := range s.leaves.due(s.media.OrphanGrace, busUp, s.media.hasNode) {
			s.reapNode(ctx, id)
		}
	}
}

func (s *Server) reapNode(ctx context.Context, nodeID string) {
	log := s.log.With().Str("node_id", nodeID).Logger()
	cctx, cancel := context.WithTimeout(ctx, orphanClaimTimeout)
	records, err := fleet.ClaimOrphans(cctx, s.calls, nodeID)
	cancel()
	if err != nil {
		// Try again at the next poll, after the grace once more.
		log.Warn().Err(err).Msg("claim calls of a dead media node")
		s.leaves.Add(nodeID)
		return
	}
	if len(records) > 0 {
		log.Info().Int("calls", len(records)).Msg("media node died, hanging up its calls")
	}
	now := s.now()
	for _, rec := range records {
		callLog := log.With().Str("call_id", rec.GetCallId()).Str("session_id", rec.GetSessionId()).Logger()
		s.hangUpDialog(callLog, rec.GetDialog(), "node_down")
		s.publishOrphanEnded(ctx, callLog, nodeID, rec, now)
	}
}

// orphanEndAttempts and orphanEndRetry bound how long the reaper keeps
// trying to publish one dead node's call end while the stream refuses it.
const (
	orphanEndAttempts = 5
	orphanEndRetry    = 200 * time.Millisecond
)

// publishOrphanEnded publishes the end of a dead node's call on its
// behalf: the node that carried it can no longer, and the record this
// replica claimed was the last trace of the call on the bus. It publishes
// at once, retrying, rather than through the event queue, which drops
// when full: a node carrying thousands of calls dies with all of them.
func (s *Server) publishOrphanEnded(ctx context.Context, log zerolog.Logger, nodeID string, rec *callgridv1.CallRecord, now time.Time) {
	if s.bus == nil {
		return
	}
	ended := fleet.NodeDownEnd(rec, now)
	ended.NodeId = nodeID
	var err error
	for attempt := range orphanEndAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(orphanEndRetry << (attempt - 1)):
			}
		}
		pctx, cancel := context.WithTimeout(ctx, eventPublishTimeout)
		// The same bytes each time, which the stream takes once.
		err = s.bus.PublishEvent(pctx, "call_ended", bus.SubjectCallEnded, ended)
		cancel()
		if err == nil {
			return
		}
	}
	log.Warn().Err(err).Msg("end of a dead node's call not published")
}
