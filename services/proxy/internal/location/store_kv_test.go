package location

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

func startNATS(t *testing.T) *server.Server {
	t.Helper()
	return startNATSWith(t, func(*server.Options) {})
}

// startNATSWith starts a server with the options edit makes of the defaults.
func startNATSWith(t *testing.T, edit func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	edit(opts)
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

func newKVStore(t *testing.T, url string, opts ...KVOption) *KVStore {
	t.Helper()
	return runKVStore(t, openKVStore(t, url, opts...))
}

// runKVStore runs s's watcher and sweeper until the test ends.
func runKVStore(t *testing.T, s *KVStore) *KVStore {
	t.Helper()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	return s
}

// openKVStore opens the bucket without running the watcher, so the local
// replica holds only what this store wrote itself.
func openKVStore(t *testing.T, url string, opts ...KVOption) *KVStore {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := NewKVStore(ctx, js, KVConfig{SweepInterval: 50 * time.Millisecond}, zerolog.New(io.Discard), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKVStoreSharedAcrossReplicas(t *testing.T) {
	srv := startNATS(t)
	a := newKVStore(t, srv.ClientURL())
	b := newKVStore(t, srv.ClientURL())
	ctx := context.Background()
	now := time.Now()
	bindings := []Binding{
		{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.1:5060", Received: "203.0.113.1:40000", Transport: "UDP", Expires: now.Add(time.Hour), UpdatedAt: now},
		{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.2:5060", Received: "203.0.113.2:40000", Transport: "TCP", Expires: now.Add(time.Hour), UpdatedAt: now.Add(time.Second)},
		{AOR: "carol@localhost", Contact: "sip:carol@10.0.0.3", Expires: now.Add(200 * time.Millisecond), UpdatedAt: now},
	}
	for _, bd := range bindings {
		save(t, a, bd)
	}
	tests := []struct {
		name string
		aor  string
		want []string
	}{
		{name: "two contacts newest first", aor: "bob@localhost", want: []string{"sip:bob@10.0.0.2:5060", "sip:bob@10.0.0.1:5060"}},
		{name: "unknown aor", aor: "dave@localhost", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			deadline := time.Now().Add(5 * time.Second)
			for {
				got, err := b.Lookup(ctx, tc.aor)
				if err != nil {
					t.Fatal(err)
				}
				if equalContacts(got, tc.want) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica b sees %v, want %v", got, tc.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	t.Run("expired binding is swept everywhere", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		for b.Count() != 2 || a.Count() != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("counts a=%d b=%d, want 2", a.Count(), b.Count())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("remove propagates", func(t *testing.T) {
		remove(t, b, "bob@localhost", "sip:bob@10.0.0.1:5060")
		deadline := time.Now().Add(5 * time.Second)
		for a.Count() != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("replica a still has %d bindings", a.Count())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func equalContacts(got []Binding, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Contact != want[i] {
			return false
		}
	}
	return true
}

// TestKVSweepSparesRefreshedBinding: a replica whose copy of a binding has
// lapsed must not delete the binding another replica has just refreshed,
// before its watcher has delivered the refresh. Neither store here runs its
// watcher, which holds that window open.
func TestKVSweepSparesRefreshedBinding(t *testing.T) {
	srv := startNATS(t)
	a := openKVStore(t, srv.ClientURL())
	b := openKVStore(t, srv.ClientURL())
	ctx := context.Background()
	now := time.Now()
	soon := Binding{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.1:5060", Expires: now.Add(200 * time.Millisecond), CallID: "c1", CSeq: 1, UpdatedAt: now}
	save(t, a, soon)
	refreshed := soon
	refreshed.Expires, refreshed.CSeq, refreshed.UpdatedAt = now.Add(time.Hour), 2, now
	save(t, b, refreshed)
	// a still holds the first binding, which lapses here.
	waitUntil(t, "a's copy lapsed", func() bool { return len(a.local.lapsed(time.Now())) == 1 })
	a.Sweep(ctx)
	got, err := b.Lookup(ctx, "bob@localhost")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].CSeq != 2 {
		t.Fatalf("bucket holds %+v after a's sweep, want the refreshed binding", got)
	}

	// Once the bucket's binding has lapsed too, the sweep deletes it.
	brief := refreshed
	brief.Expires, brief.CSeq = time.Now().Add(200*time.Millisecond), 3
	save(t, b, brief)
	waitUntil(t, "b's copy lapsed", func() bool { return len(b.local.lapsed(time.Now())) == 1 })
	b.Sweep(ctx)
	if got, err := a.Lookup(ctx, "bob@localhost"); err != nil || len(got) != 0 {
		t.Fatalf("lapsed binding not swept: %+v, %v", got, err)
	}
	if _, err := b.kv.Get(ctx, recordKey(brief.AOR)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lapsed record still in the bucket: %v", err)
	}
}

// TestKVLookupBeforeSyncKeepsAORsApart: the user part of an AOR is case
// sensitive (RFC 3261 19.1.4), so reading the bucket before the watcher has
// caught up must not answer for Bob with bob's phones.
func TestKVLookupBeforeSyncKeepsAORsApart(t *testing.T) {
	srv := startNATS(t)
	a := openKVStore(t, srv.ClientURL())
	b := openKVStore(t, srv.ClientURL())
	ctx := context.Background()
	now := time.Now()
	for _, bd := range []Binding{
		{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.1", Expires: now.Add(time.Hour), UpdatedAt: now},
		{AOR: "Bob@localhost", Contact: "sip:Bob@10.0.0.2", Expires: now.Add(time.Hour), UpdatedAt: now},
	} {
		save(t, a, bd)
	}
	for _, aor := range []string{"bob@localhost", "Bob@localhost"} {
		got, err := b.Lookup(ctx, aor)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].AOR != aor {
			t.Errorf("lookup %s before sync: %+v", aor, got)
		}
	}
}

// TestKVStoreReadsItsOwnWrites: once an update returns, the replica that
// made it routes by it, before its watcher echoes it back.
func TestKVStoreReadsItsOwnWrites(t *testing.T) {
	s := newKVStore(t, startNATS(t).ClientURL())
	waitUntil(t, "replica in sync", s.Synced)
	ctx := context.Background()
	now := time.Now()
	for i := range 20 {
		b := Binding{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.1", CSeq: uint32(i), Expires: now.Add(time.Hour), UpdatedAt: now}
		save(t, s, b)
		if got, err := s.Lookup(ctx, b.AOR); err != nil || len(got) != 1 || got[0].CSeq != b.CSeq {
			t.Fatalf("round %d: lookup after save: %+v, %v", i, got, err)
		}
		remove(t, s, b.AOR, b.Contact)
		if got, err := s.Lookup(ctx, b.AOR); err != nil || len(got) != 0 {
			t.Fatalf("round %d: lookup after remove: %+v, %v", i, got, err)
		}
	}
}
