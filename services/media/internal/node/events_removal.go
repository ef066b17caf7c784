package node

import (
	"context"
	"time"
)

// removalRetryInterval is how often the writer tries again the removals
// of records that outlasted a write's retries.
const removalRetryInterval = writeRetryMax

// removal is a call record owed its removal: the record under key, at
// revision rev (0: any).
type removal struct {
	key string
	rev uint64
}

// writtenRecord is the last record the writer wrote under a key: whose
// call (session.call) it is, and its revision (0: unknown).
type writtenRecord struct {
	call, rev uint64
}

// removalOf is op with, for a removal, the revision of the call's record
// the writer wrote last, which is the one to remove: the writes of one
// call come in order, its end's removal after its records. The revision is
// forgotten as the removal is taken up; its retries carry it. ok is false
// for a removal with nothing to remove.
//
// The writes of different calls under one key need not come in their
// calls' order: the ledger lets a session id go before its end is queued,
// so a later call under it may have its record queued, and written, first.
// That record replaced the ended call's, and stays. A record the writer
// knows of from an earlier call is one whose end never came (a full queue
// dropped it), and this call's own is at a revision unknown.
func (w *busWriter) removalOf(op busWrite) (removal busWrite, ok bool) {
	if op.kind != writeRemoval {
		return op, true
	}
	last, found := w.recorded[op.key]
	switch {
	case found && last.call > op.call:
		return op, false
	case found && last.call == op.call:
		op.rev = last.rev
	}
	delete(w.recorded, op.key)
	return op, true
}

// keepRemoving keeps the removal of the record under key at rev, whose
// call's end is out, for the writer to try again every
// removalRetryInterval, for as long as it runs and without holding up the
// writes queued behind it. Given up, the record would outlive its call,
// and the node's next run or a proxy would hang the call up again, publish
// a second end for it (node_down, with talk time up to then) and count its
// talk time twice. The removals are bounded like the queue; past that the
// removal is dropped.
//
// Kept removals are made out of the queue's order, after writes queued
// behind them: a later call under the same key may have had its record
// written meanwhile. That write drops the removal (forgetRemovals), and
// the removal is made only at the ended call's revision anyway
// (removeRecord), so the later call's record stays.
func (w *busWriter) keepRemoving(key string, rev uint64) {
	if len(w.unremoved) >= cap(w.ch) {
		w.log.Warn().Str("key", key).Int("records", len(w.unremoved)).Msg("call record removal failed, too many owed: dropped")
		return
	}
	if len(w.unremoved) == 0 {
		w.log.Warn().Str("key", key).Msg("call record removal failed: trying again in the background")
	}
	w.unremoved = append(w.unremoved, removal{key: key, rev: rev})
}

// forgetRemovals drops the kept removals of key, whose record was just
// written anew: it is a later call's, which must stay.
func (w *busWriter) forgetRemovals(key string) {
	if len(w.unremoved) == 0 {
		return
	}
	kept := w.unremoved[:0]
	for _, r := range w.unremoved {
		if r.key != key {
			kept = append(kept, r)
		}
	}
	clear(w.unremoved[len(kept):])
	w.unremoved = kept
}

// removeUnremoved tries the removals keepRemoving kept, in order, and
// stops at the first that fails: the calls bucket is still failing, and
// each try waits out its timeout.
func (w *busWriter) removeUnremoved() {
	done := 0
	for _, r := range w.unremoved {
		if w.removeRecord(r.key, r.rev) != nil {
			break
		}
		done++
	}
	if done == 0 {
		return
	}
	w.unremoved = w.unremoved[done:]
	w.log.Info().Int("removed", done).Int("left", len(w.unremoved)).Msg("call records of ended calls removed after retries")
}

// settleRemovals tries the removals still owed again, waiting
// writeRetryMin doubling to writeRetryMax, until none is left, giveUp is
// closed or ctx ends. A flush comes before the node's goodbye, which has
// the proxies take the records left, and the next run of the node takes
// them too: either ends those calls a second time (node_down). Settled
// there, the calls bucket failing for a while as the node stops costs no
// second end. Only a bucket failing for all of the flush's time does:
// each end is out before its record's removal is tried, so that a bus gone
// at the end leaves the call recorded for the next run to end rather than
// with no end at all, and with both the record and the end in place the
// next run has nothing on the bus to tell it the end went out: the events
// stream keeps every call's end under one subject, and finds one only by
// its bytes, and only within its duplicate window.
func (w *busWriter) settleRemovals(ctx context.Context, giveUp <-chan struct{}) {
	for wait := writeRetryMin; ; wait = min(2*wait, writeRetryMax) {
		w.removeUnremoved()
		if len(w.unremoved) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-giveUp:
			return
		case <-time.After(wait):
		}
	}
}
