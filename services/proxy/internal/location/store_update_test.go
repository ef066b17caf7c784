package location

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// bump is a Change that counts: it raises the CSeq of aor's one binding
// by one. A lost update (two changes both starting from the same CSeq)
// leaves the CSeq below the number of updates that succeeded.
func bump(aor string) Change {
	return func(live []Binding) ([]Binding, error) {
		b := Binding{AOR: aor, Contact: "sip:counter@192.0.2.1", CallID: "count", Expires: time.Now().Add(time.Hour), UpdatedAt: time.Now()}
		if len(live) == 1 {
			b.CSeq = live[0].CSeq
		}
		b.CSeq++
		return []Binding{b}, nil
	}
}

// TestUpdateIsAtomic runs concurrent read-modify-writes of one AOR, through
// two KV replicas and through the memory store: none may be lost.
func TestUpdateIsAtomic(t *testing.T) {
	const aor, updates = "bob@localhost", 40
	tests := []struct {
		name   string
		stores func(t *testing.T) []Store
	}{
		{name: "memory", stores: func(t *testing.T) []Store { return []Store{NewMemoryStore(nil)} }},
		{name: "kv two replicas", stores: func(t *testing.T) []Store {
			url := startNATS(t).ClientURL()
			a, b := newKVStore(t, url), newKVStore(t, url)
			waitUntil(t, "replicas in sync", func() bool { return a.Synced() && b.Synced() })
			return []Store{a, b}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stores := tc.stores(t)
			var (
				wg        sync.WaitGroup
				mu        sync.Mutex
				succeeded int
				conflicts int
			)
			start := make(chan struct{})
			for i := range updates {
				s := stores[i%len(stores)]
				wg.Go(func() {
					<-start
					_, err := s.Update(context.Background(), aor, bump(aor))
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						succeeded++
					case errors.Is(err, ErrConflict):
						conflicts++
					default:
						t.Errorf("update: %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			t.Logf("%d updates succeeded, %d gave up on conflicts", succeeded, conflicts)
			got, err := stores[0].Update(context.Background(), aor, func([]Binding) ([]Binding, error) { return nil, ErrUnchanged })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].CSeq != uint32(succeeded) {
				t.Fatalf("%d updates succeeded (%d gave up on conflicts) but the binding is %+v", succeeded, conflicts, got)
			}
			if succeeded == 0 {
				t.Fatal("no update succeeded")
			}
		})
	}
}

// TestKVUpdateGivesUpOnEndlessConflict: when every attempt loses to
// another write, Update stops after a bounded number and changes nothing.
func TestKVUpdateGivesUpOnEndlessConflict(t *testing.T) {
	url := startNATS(t).ClientURL()
	a, b := openKVStore(t, url), openKVStore(t, url)
	const aor = "bob@localhost"
	attempts := 0
	_, err := a.Update(context.Background(), aor, func(live []Binding) ([]Binding, error) {
		attempts++
		// Another replica writes between this read and its write.
		if _, err := b.Update(context.Background(), aor, bump(aor)); err != nil {
			return nil, err
		}
		return bump(aor)(live)
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
	if attempts != updateAttempts {
		t.Errorf("%d attempts, want %d", attempts, updateAttempts)
	}
	got, err := b.Lookup(context.Background(), aor)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].CSeq != updateAttempts {
		t.Fatalf("bucket holds %+v, want only b's %d bumps", got, updateAttempts)
	}
}

// frozenKVStore is a KV store whose watcher caught up and then stopped:
// its replica is "in sync" and stays as it was, the view of a replica
// whose watcher lags behind the bucket.
func frozenKVStore(t *testing.T, url string) *KVStore {
	t.Helper()
	s := openKVStore(t, url)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	waitUntil(t, "replica in sync", s.Synced)
	stop()
	<-done
	return s
}

var errOlder = errors.New("older than a stored binding")

// setCSeq is the registrar's ordering in small: it sets the binding to
// seq unless the stored one is at seq or above.
func setCSeq(aor string, seq uint32) Change {
	return func(live []Binding) ([]Binding, error) {
		if len(live) == 1 && live[0].CSeq >= seq {
			return nil, fmt.Errorf("cseq %d: %w", seq, errOlder)
		}
		return []Binding{{AOR: aor, Contact: "sip:bob@192.0.2.1", CallID: "c", CSeq: seq, Expires: time.Now().Add(time.Hour), UpdatedAt: time.Now()}}, nil
	}
}

// TestKVUpdateDecidesOnFreshState: Update may start from a lagging replica,
// but what it writes, refuses or leaves alone is decided on the bucket's
// current state.
func TestKVUpdateDecidesOnFreshState(t *testing.T) {
	const aor = "bob@localhost"
	tests := []struct {
		name string
		// before is stored, and seen by the lagging replica; after is then
		// stored through another replica (0: the binding removed).
		before, after uint32
		change        Change
		wantErr       error
		wantCSeq      uint32 // in the bucket afterwards, 0 for none
	}{
		{name: "a write on a stale read is refused", before: 1, after: 5, change: setCSeq(aor, 3), wantErr: errOlder, wantCSeq: 5},
		{name: "a refusal on a stale read is retried", before: 5, after: 0, change: setCSeq(aor, 3), wantCSeq: 3},
		{name: "no change answers with the fresh bindings", before: 5, after: 6, wantCSeq: 6,
			change: func([]Binding) ([]Binding, error) { return nil, ErrUnchanged }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := startNATS(t).ClientURL()
			writer := openKVStore(t, url)
			if _, err := writer.Update(context.Background(), aor, setCSeq(aor, tc.before)); err != nil {
				t.Fatal(err)
			}
			lagging := frozenKVStore(t, url)
			if got := lagging.local.lookup(aor, time.Now()); len(got) != 1 || got[0].CSeq != tc.before {
				t.Fatalf("lagging replica holds %+v", got)
			}
			after := setCSeq(aor, tc.after)
			if tc.after == 0 {
				after = func([]Binding) ([]Binding, error) { return nil, nil }
			}
			if _, err := writer.Update(context.Background(), aor, after); err != nil {
				t.Fatal(err)
			}

			got, err := lagging.Update(context.Background(), aor, tc.change)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("update: %v, want %v", err, tc.wantErr)
			}
			if err == nil && (len(got) != 1 || got[0].CSeq != tc.wantCSeq) {
				t.Errorf("update returned %+v, want cseq %d", got, tc.wantCSeq)
			}
			stored, err := writer.Lookup(context.Background(), aor)
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != 1 || stored[0].CSeq != tc.wantCSeq {
				t.Fatalf("bucket holds %+v, want cseq %d", stored, tc.wantCSeq)
			}
		})
	}
}

// TestReplicaKeepsLatestRevision: the watcher and the store's own writes
// may bring one AOR's states out of order; the replica keeps the latest,
// and an older state does not bring back bindings removed since.
// Across watches the replay decides, whatever the revisions.
func TestReplicaKeepsLatestRevision(t *testing.T) {
	now := time.Now()
	b := func(seq uint32) []Binding {
		return []Binding{{AOR: "bob@localhost", Contact: "sip:bob@192.0.2.1", CSeq: seq, Expires: now.Add(time.Hour)}}
	}
	tests := []struct {
		name  string
		apply func(r *replica)
		want  []uint32 // CSeqs of the live bindings
	}{
		{name: "newer replaces", want: []uint32{2}, apply: func(r *replica) {
			r.set("bob@localhost", b(1), 10, 0, now)
			r.set("bob@localhost", b(2), 11, 0, now)
		}},
		{name: "older is ignored", want: []uint32{2}, apply: func(r *replica) {
			r.set("bob@localhost", b(2), 11, 0, now)
			r.set("bob@localhost", b(1), 10, 0, now)
		}},
		{name: "removal is not undone by an older state", want: nil, apply: func(r *replica) {
			r.set("bob@localhost", nil, 12, 0, now)
			r.set("bob@localhost", b(2), 11, 0, now)
		}},
		{name: "a later state comes back after a removal", want: []uint32{3}, apply: func(r *replica) {
			r.set("bob@localhost", nil, 12, 0, now)
			r.set("bob@localhost", b(3), 13, 0, now)
		}},
		{name: "tombstones are forgotten after a while", want: []uint32{1}, apply: func(r *replica) {
			r.set("bob@localhost", nil, 12, 0, now)
			r.prune(now.Add(2 * tombstoneLinger))
			r.set("bob@localhost", b(1), 11, 0, now)
		}},
		{name: "a new watch's state replaces a higher revision of the last", want: []uint32{2}, apply: func(r *replica) {
			r.set("bob@localhost", b(1), 50, r.begin(), now)
			r.set("bob@localhost", b(2), 3, r.begin(), now)
		}},
		{name: "what a new watch's replay did not bring is dropped", want: nil, apply: func(r *replica) {
			r.set("bob@localhost", b(1), 50, r.begin(), now)
			r.end(r.begin())
		}},
		{name: "a write from before a new watch is left to it", want: nil, apply: func(r *replica) {
			before := r.current()
			r.begin()
			r.set("bob@localhost", b(1), 5, before, now)
		}},
		{name: "a write during the replay outlives its end", want: []uint32{3}, apply: func(r *replica) {
			r.set("bob@localhost", b(1), 50, r.begin(), now)
			epoch := r.begin()
			r.set("bob@localhost", b(3), 4, epoch, now)
			r.end(epoch)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReplica()
			tc.apply(r)
			var got []uint32
			for _, l := range r.lookup("bob@localhost", now) {
				got = append(got, l.CSeq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("live cseqs %v, want %v", got, tc.want)
			}
		})
	}
}
