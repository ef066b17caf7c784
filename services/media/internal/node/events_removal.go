package node

import "errors"

// errRecordRemoval is a call-ended write whose event went out and whose
// record's removal failed.
var errRecordRemoval = errors.New("remove call record after its end event")

// removalRetryInterval is how often the writer tries again the removals
// of records that outlasted a write's retries.
const removalRetryInterval = writeRetryMax

// removal is a call record owed its removal: the record under key, at
// revision rev (0: any).
type removal struct {
	key string
	rev uint64
}

// removalOf is op with, for a call's end, the revision of the call's
// record the writer wrote last, which is the one to remove: the writes of
// one call come in order, its end after its records. The revision is
// forgotten as the end is taken up; the end's retries carry it.
func (w *busWriter) removalOf(op busWrite) busWrite {
	if op.kind != writeEnd {
		return op
	}
	op.rev = w.recorded[op.key]
	delete(w.recorded, op.key)
	return op
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
