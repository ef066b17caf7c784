package location

import (
	"context"
	"testing"
	"time"
)

// save inserts or replaces b among its AOR's bindings.
func save(t *testing.T, s Store, b Binding) {
	t.Helper()
	_, err := s.Update(context.Background(), b.AOR, func(live []Binding) ([]Binding, error) {
		out := live[:0]
		for _, l := range live {
			if l.Contact != b.Contact {
				out = append(out, l)
			}
		}
		return append(out, b), nil
	})
	if err != nil {
		t.Fatalf("save %s: %v", b.Contact, err)
	}
}

// remove deletes one contact of aor.
func remove(t *testing.T, s Store, aor, contact string) {
	t.Helper()
	_, err := s.Update(context.Background(), aor, func(live []Binding) ([]Binding, error) {
		out := live[:0]
		for _, l := range live {
			if l.Contact != contact {
				out = append(out, l)
			}
		}
		return out, nil
	})
	if err != nil {
		t.Fatalf("remove %s: %v", contact, err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
