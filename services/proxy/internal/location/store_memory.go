package location

import (
	"context"
	"sync"
	"time"
)

// MemoryStore is a process-local Store: the default for a single replica and
// the local view the KV store keeps so routing survives a bus outage.
type MemoryStore struct {
	now func() time.Time

	mu   sync.RWMutex
	aors map[string]map[string]Binding // aor -> contact -> binding
}

// NewMemoryStore returns an empty store. now may be nil (time.Now).
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{now: now, aors: make(map[string]map[string]Binding)}
}

// Lookup returns the live bindings of aor, newest first.
func (m *MemoryStore) Lookup(_ context.Context, aor string) ([]Binding, error) {
	now := m.now()
	m.mu.RLock()
	contacts := m.aors[aor]
	out := make([]Binding, 0, len(contacts))
	for _, b := range contacts {
		if !b.Expired(now) {
			out = append(out, b)
		}
	}
	m.mu.RUnlock()
	sortNewestFirst(out)
	return out, nil
}

// Save inserts or replaces the binding keyed by (AOR, Contact).
func (m *MemoryStore) Save(_ context.Context, b Binding) error {
	m.mu.Lock()
	contacts := m.aors[b.AOR]
	if contacts == nil {
		contacts = make(map[string]Binding)
		m.aors[b.AOR] = contacts
	}
	contacts[b.Contact] = b
	m.mu.Unlock()
	return nil
}

// Remove deletes one contact of aor.
func (m *MemoryStore) Remove(_ context.Context, aor, contact string) error {
	m.mu.Lock()
	if contacts := m.aors[aor]; contacts != nil {
		delete(contacts, contact)
		if len(contacts) == 0 {
			delete(m.aors, aor)
		}
	}
	m.mu.Unlock()
	return nil
}

// Count returns the number of live bindings.
func (m *MemoryStore) Count() int {
	now := m.now()
	n := 0
	m.mu.RLock()
	for _, contacts := range m.aors {
		for _, b := range contacts {
			if !b.Expired(now) {
				n++
			}
		}
	}
	m.mu.RUnlock()
	return n
}

// Expired returns the bindings whose expiry has passed, so a sweeper can
// delete them from the shared store.
func (m *MemoryStore) Expired() []Binding {
	now := m.now()
	var out []Binding
	m.mu.RLock()
	for _, contacts := range m.aors {
		for _, b := range contacts {
			if b.Expired(now) {
				out = append(out, b)
			}
		}
	}
	m.mu.RUnlock()
	return out
}

// PruneExpired drops lapsed bindings from memory only.
func (m *MemoryStore) PruneExpired() {
	now := m.now()
	m.mu.Lock()
	for aor, contacts := range m.aors {
		for c, b := range contacts {
			if b.Expired(now) {
				delete(contacts, c)
			}
		}
		if len(contacts) == 0 {
			delete(m.aors, aor)
		}
	}
	m.mu.Unlock()
}
