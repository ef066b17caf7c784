package node

import (
	"context"
	"time"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A handover of the previous run's calls that fails is tried again,
// before the node serves, up to handoverAttempts times in all, waiting
// handoverRetryMin doubling between them. All of them are over, the
// removal of the record in hand and the release of the reaper lock
// included, handoverRetryFor after the first started: none starts that
// would not, and one under way then is cut short. What is left is handed
// over once the node serves, attempt after attempt, waiting up to
// handoverRetryMax between them, until none is left or the node stops.
const (
	handoverAttempts = 4
	handoverRetryMin = time.Second
	handoverRetryFor = 30 * time.Second
	handoverRetryMax = 30 * time.Second
)

// handover is one handing over of a previous run's calls, over all its
// attempts.
type handover struct {
	// taker is one for every attempt: it takes again a reaper lock that
	// an attempt of its own failed to release, which would otherwise pass
	// for another's and have the next attempt take nothing, and it takes
	// only the records from before the node served.
	taker *fleet.OrphanTaker
	// at is the time of every attempt: a call whose events went out and
	// whose record stayed is published again with the same bytes, which
	// the stream stores once.
	at time.Time
	// counted holds the sessions whose talk time is counted already.
	counted map[string]bool
}

// handOverPreviousCalls has the proxies hang up the calls a previous run
// of this node left recorded: a node that crashed and came back under its
// id within the fleet's grace never left the proxies' view, so nothing
// else would. Each goes out as a media timeout, which a proxy acts on by
// sending BYE to both legs, then as its end; the reaper lock keeps a proxy
// that did see the node leave from taking them too. Both are published,
// and stored by the stream, before the record goes, one call at a time:
// however many calls there are, none is dropped as a full write queue
// would, and a node that dies again part way leaves the rest recorded for
// its next run or a proxy (a call whose record outlived its publishing is
// ended twice, which consumers keep once).
//
// It is tried again (see handoverAttempts) before the node serves, and
// returns nil once every call is handed over. Otherwise it returns the
// handover for handOverRest to go on with once the node serves: the
// proxies take a node's records only once it leaves the fleet, which a
// node serving never does, and its next run may come after the records'
// expiry, so nobody else would hang those calls up.
func (n *Node) handOverPreviousCalls(ctx context.Context) *handover {
	h := &handover{taker: fleet.NewOrphanTaker(n.writer.calls, n.cfg.ID), at: time.Now(), counted: make(map[string]bool)}
	// The bound holds for the attempts themselves, not only for when they
	// start: a handover running late keeps the node from serving.
	bounded, cancel := context.WithDeadline(ctx, h.at.Add(n.handoverFor))
	defer cancel()
	wait := handoverRetryMin
	for attempt := 1; ; attempt++ {
		err := n.handOverOnce(bounded, h)
		if err == nil {
			return nil
		}
		if attempt >= handoverAttempts || time.Since(h.at)+wait > n.handoverFor || bounded.Err() != nil {
			n.log.Warn().Err(err).Int("attempts", attempt).
				Msg("hand over calls of a previous run: the rest are handed over once the node serves")
			return h
		}
		n.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("hand over calls of a previous run: retrying")
		select {
		case <-bounded.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// handOverRest goes on with h, which handOverPreviousCalls left unfinished,
// while the node serves: until every call of the previous run is handed
// over or ctx ends.
func (n *Node) handOverRest(ctx context.Context, h *handover) {
	for wait := handoverRetryMin; ; wait = min(2*wait, handoverRetryMax) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := n.handOverOnce(ctx, h)
		if err == nil {
			n.log.Info().Msg("calls of a previous run: all handed over")
			return
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn().Err(err).Dur("retry_in", min(2*wait, handoverRetryMax)).Msg("hand over calls of a previous run: retrying")
	}
}

// handOverOnce is one attempt of h: why it stopped short, nil once every
// call is handed over.
func (n *Node) handOverOnce(ctx context.Context, h *handover) error {
	taken, err := h.taker.Take(ctx, func(ctx context.Context, rec *callgridv1.CallRecord) error {
		if err := n.writer.publishNow(ctx, "media_timeout", bus.SubjectMediaTimeout, &callgridv1.MediaTimeout{
			CallId: rec.GetCallId(), SessionId: rec.GetSessionId(), NodeId: n.cfg.ID, Dialog: rec.GetDialog(), UnixMs: h.at.UnixMilli(),
		}); err != nil {
			return err
		}
		ended := fleet.NodeDownEnd(rec, h.at)
		ended.NodeId = n.cfg.ID
		if err := n.writer.publishNow(ctx, "call_ended", bus.SubjectCallEnded, ended); err != nil {
			return err
		}
		if rec.GetAnsweredUnixMs() > 0 && !h.counted[rec.GetSessionId()] {
			// The run that carried the call died before it could count
			// it; it is counted here, as its end goes out.
			n.metrics.observeCall("node_down", ended.GetDurationSeconds())
			h.counted[rec.GetSessionId()] = true
		}
		return nil
	})
	if taken > 0 {
		n.log.Warn().Int("calls", taken).Msg("calls of a previous run of this node: handed to the proxies to hang up")
	}
	return err
}
