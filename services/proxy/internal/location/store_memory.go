package location

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// MemoryStore is a process-local Store, the default for a single replica.
// One lock serialises its updates, which gives an Update the same
// atomicity the KV store gets from compare-and-set: a Change is pure and
// quick, so holding the lock while it runs costs nothing worth sharding.
type MemoryStore struct {
	now func() time.Time

	mu   sync.RWMutex
	aors map[string][]Binding // aor -> its bindings, lapsed ones until the next update
}

// NewMemoryStore returns an empty store. now may be nil (time.Now).
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{now: now, aors: make(map[string][]Binding)}
}

// Lookup returns the live bindings of aor, newest first.
func (m *MemoryStore) Lookup(_ context.Context, aor string) ([]Binding, error) {
	now := m.now()
	m.mu.RLock()
	defer m.mu.RUnlock()
	return liveBindings(m.aors[aor], now), nil
}

// Update applies change to the live bindings of aor under the store's lock.
func (m *MemoryStore) Update(_ context.Context, aor string, change Change) ([]Binding, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	live := liveBindings(m.aors[aor], now)
	next, err := change(slices.Clone(live))
	if errors.Is(err, ErrUnchanged) {
		return live, nil
	}
	if err != nil {
		return nil, err
	}
	next = liveBindings(next, now)
	if len(next) == 0 {
		delete(m.aors, aor)
		return next, nil
	}
	// The store keeps its own copy: the caller may go on using next.
	m.aors[aor] = append([]Binding(nil), next...)
	return next, nil
}

// Count returns the number of live bindings.
func (m *MemoryStore) Count() int {
	now := m.now()
	n := 0
	m.mu.RLock()
	for _, bs := range m.aors {
		for _, b := range bs {
			if !b.Expired(now) {
				n++
			}
		}
	}
	m.mu.RUnlock()
	return n
}
