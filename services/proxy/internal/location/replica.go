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
type replica struct {
	mu   sync.RWMutex
	aors map[string]replicaEntry
}

type replicaEntry struct {
	bindings []Binding
	rev      uint64
	// removedAt is set when the AOR has no bindings left: the entry stays
	// a while as a tombstone that holds its revision.
	removedAt time.Time
}

func newReplica() *replica {
	return &replica{aors: make(map[string]replicaEntry)}
}

// set records the bindings of aor as of bucket revision rev, unless the
// replica already holds that revision or a later one. No bindings means
// the AOR has none left.
func (r *replica) set(aor string, bindings []Binding, rev uint64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.aors[aor]; ok && rev <= cur.rev {
		return
	}
	if len(bindings) == 0 {
		r.aors[aor] = replicaEntry{rev: rev, removedAt: now}
		return
	}
	r.aors[aor] = replicaEntry{bindings: bindings, rev: rev}
}

// state returns what the replica holds for aor and the revision to
// compare-and-set against: 0 when the AOR has no record in the bucket as
// far as this replica knows.
func (r *replica) state(aor string) (bindings []Binding, rev uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.aors[aor]
	if !ok || !e.removedAt.IsZero() {
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
	n := 0
	r.mu.RLock()
	for _, e := range r.aors {
		for _, b := range e.bindings {
			if !b.Expired(now) {
				n++
			}
		}
	}
	r.mu.RUnlock()
	return n
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
				r.aors[aor] = replicaEntry{rev: e.rev, removedAt: now}
				continue
			}
			r.aors[aor] = replicaEntry{bindings: live, rev: e.rev}
		}
	}
}
