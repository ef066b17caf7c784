package location

import (
	"sync"
	"time"
)

// tombstoneLinger is how long a replica remembers the revision of an AOR
// left without bindings. A state of the AOR older than that revision can
// still come in meanwhile (this replica's own write, acknowledged after
// the watcher already delivered a later one) and must not bring the
// bindings back; it comes within a request's deadline, well inside this.
const tombstoneLinger = time.Minute

// replica is the KV store's local copy of the bucket, fed by the watcher
// and by the store's own writes, so that lookups need no round trip and a
// replica reads its own writes before the watcher echoes them. Every AOR
// keeps the bucket revision its state is from, and a state only replaces
// one of a lower revision: the two feeds may deliver one AOR's states out
// of order, never the bucket itself.
//
// Revisions only compare within one watch, though. A watch that has to be
// opened again replays the bucket, which is then the only truth: the bucket
// may have been deleted and created again, its revisions starting over from
// 1, and keys may be gone without a delete marker (a purged stream, a lost
// server store). So each watch begins an epoch: a state of the current
// epoch replaces one of an earlier epoch whatever their revisions, and once
// the replay is complete whatever it did not bring back is dropped.
type replica struct {
	mu    sync.RWMutex
	aors  map[string]replicaEntry
	epoch uint64
}

type replicaEntry struct {
	bindings []Binding
	rev      uint64
	epoch    uint64
	// removedAt is set when the AOR has no bindings left: the entry stays
	// a while as a tombstone that holds its revision.
	removedAt time.Time
}

func newReplica() *replica {
	return &replica{aors: make(map[string]replicaEntry)}
}

// begin starts the epoch of a watch about to be opened and returns it.
func (r *replica) begin() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epoch++
	return r.epoch
}

// current returns the epoch a write about to be made belongs to.
func (r *replica) current() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.epoch
}

// end is called once the watch of epoch has replayed the bucket: an AOR
// neither replayed nor written since is no longer in the bucket.
func (r *replica) end(epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if epoch != r.epoch {
		return
	}
	for aor, e := range r.aors {
		if e.epoch < epoch {
			delete(r.aors, aor)
		}
	}
}

// set records the bindings of aor as of bucket revision rev, seen in
// epoch, unless the replica already holds that revision or a later one of
// the same epoch. No bindings means the AOR has none left. A state of an
// epoch already over is dropped: its revision may be of a bucket since
// replaced, and the current watch brings the state if it is still there.
func (r *replica) set(aor string, bindings []Binding, rev, epoch uint64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if epoch < r.epoch {
		return
	}
	if cur, ok := r.aors[aor]; ok && cur.epoch == epoch && rev <= cur.rev {
		return
	}
	if len(bindings) == 0 {
		r.aors[aor] = replicaEntry{rev: rev, epoch: epoch, removedAt: now}
		return
	}
	r.aors[aor] = replicaEntry{bindings: bindings, rev: rev, epoch: epoch}
}

// state returns what the replica holds for aor and the revision to
// compare-and-set against: 0 when the AOR has no record in the bucket as
// far as this replica knows. A state from before the current watch's
// replay counts as unknown, since its revision may belong to a bucket
// since replaced, where it could match another record's by chance.
func (r *replica) state(aor string) (bindings []Binding, rev uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.aors[aor]
	if !ok || !e.removedAt.IsZero() || e.epoch != r.epoch {
		return nil, 0
	}
	return e.bindings, e.rev
}

// lookup returns the live bindings of aor, newest first.
func (r *replica) lookup(aor string, now time.Time) []Binding {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return liveBindings(r.aors[aor].bindings, now)
}

func (r *replica) count(now time.Time) int {
	_, contacts := r.totals(now)
	return contacts
}

// totals counts the AORs with a live binding at now, and those bindings.
func (r *replica) totals(now time.Time) (aors, contacts int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.aors {
		live := 0
		for _, b := range e.bindings {
			if !b.Expired(now) {
				live++
			}
		}
		if live > 0 {
			aors++
			contacts += live
		}
	}
	return aors, contacts
}

// lapsed returns the AORs holding a binding that has lapsed at now.
func (r *replica) lapsed(now time.Time) []string {
	var out []string
	r.mu.RLock()
	for aor, e := range r.aors {
		if hasLapsed(e.bindings, now) {
			out = append(out, aor)
		}
	}
	r.mu.RUnlock()
	return out
}

// prune drops lapsed bindings from memory only, keeping each AOR's
// revision, and forgets tombstones older than tombstoneLinger.
func (r *replica) prune(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for aor, e := range r.aors {
		switch {
		case !e.removedAt.IsZero():
			if now.Sub(e.removedAt) > tombstoneLinger {
				delete(r.aors, aor)
			}
		case hasLapsed(e.bindings, now):
			live := liveBindings(e.bindings, now)
			if len(live) == 0 {
				r.aors[aor] = replicaEntry{rev: e.rev, epoch: e.epoch, removedAt: now}
				continue
			}
			r.aors[aor] = replicaEntry{bindings: live, rev: e.rev, epoch: e.epoch}
		}
	}
}
