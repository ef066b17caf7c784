package node

import "errors"

// errRecordRemoval is a call-ended write whose event went out and whose
// record's removal failed.
var errRecordRemoval = errors.New("remove call record after its end event")

// removalRetryInterval is how often the writer tries again the removals
// of records that outlasted a write's retries.
const removalRetryInterval = writeRetryMax

// keepRemoving keeps the removal of the record under key, whose call's end
// is out, for the writer to try again every removalRetryInterval, for as
// long as it runs and without holding up the writes queued behind it.
// Given up, the record would outlive its call, and the node's next run or
// a proxy would hang the call up again, publish a second end for it
// (node_down, with talk time up to then) and count its talk time twice.
// The keys are bounded like the queue; past that the removal is dropped.
func (w *busWriter) keepRemoving(key string) {
	if len(w.unremoved) >= cap(w.ch) {
		w.log.Warn().Str("key", key).Int("records", len(w.unremoved)).Msg("call record removal failed, too many owed: dropped")
		return
	}
	if len(w.unremoved) == 0 {
		w.log.Warn().Str("key", key).Msg("call record removal failed: trying again in the background")
	}
	w.unremoved = append(w.unremoved, key)
}

// removeUnremoved tries the removals keepRemoving kept, in order, and
// stops at the first that fails: the calls bucket is still failing, and
// each try waits out its timeout.
func (w *busWriter) removeUnremoved() {
	done := 0
	for _, key := range w.unremoved {
		if w.removeRecord(key) != nil {
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
