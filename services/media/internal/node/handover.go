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
// would not, and one under way then is cut short.
const (
	handoverAttempts = 4
	handoverRetryMin = time.Second
	handoverRetryFor = 30 * time.Second
)

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
// node serves so that every record under its id is still an old one.
//
// Known limit: a handover still short of done at its bound (the calls
// bucket failing or slow all along, or more calls than it gets through in
// that time) is given up, and the node serves with the rest still
// recorded. The proxies take a node's records only once it leaves the
// fleet, which a node serving never does, so those calls stay up, unended,
// until their phones hang up, the node leaves the fleet (its goodbye or
// its death has the proxies take every record under its id, these
// included) or its next run hands them over; a record nobody takes
// expires after fleet.DefaultCallRecordMaxAge. It is not handed over
// while the node serves: that would hold the reaper lock, which keeps the
// proxies from reaping the node should it die then, and the records of the
// node's own live calls are under the same id.
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
	// start: a handover running late keeps the node from serving.
	bounded, cancel := context.WithDeadline(ctx, first.Add(n.handoverFor))
	defer cancel()
	for attempt := 1; ; attempt++ {
		taken, err := n.handOverOnce(bounded, taker, first, counted)
		if taken > 0 {
			n.log.Warn().Int("calls", taken).Msg("calls of a previous run of this node: handed to the proxies to hang up")
		}
		if err == nil {
			return
		}
		if attempt >= handoverAttempts || time.Since(first)+wait > n.handoverFor || bounded.Err() != nil {
			n.log.Warn().Err(err).Int("attempts", attempt).
				Msg("hand over calls of a previous run: given up; the rest stay recorded, not hung up, until this node leaves the fleet or its next run")
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
