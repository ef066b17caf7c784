package location

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Every series of the location store, as series keys them.
const (
	seriesAORs            = `sip_proxy_location_aors`
	seriesConflictRetried = `sip_proxy_location_update_conflicts_total{outcome="retried"}`
	seriesConflictGaveUp  = `sip_proxy_location_update_conflicts_total{outcome="gave_up"}`
	seriesResyncClosed    = `sip_proxy_location_resyncs_total{reason="watcher_closed"}`
	seriesResyncMissing   = `sip_proxy_location_resyncs_total{reason="bucket_missing"}`
	seriesResyncReplaced  = `sip_proxy_location_resyncs_total{reason="bucket_replaced"}`
	seriesRecreations     = `sip_proxy_location_bucket_recreations_total`
	seriesExpired         = `sip_proxy_location_bindings_expired_total`
	seriesReadErrors      = `sip_proxy_location_bus_errors_total{op="read"}`
	seriesWriteErrors     = `sip_proxy_location_bus_errors_total{op="write"}`
	seriesWatchErrors     = `sip_proxy_location_bus_errors_total{op="watch"}`
	seriesStatusErrors    = `sip_proxy_location_bus_errors_total{op="status"}`
	seriesRecreateErrors  = `sip_proxy_location_bus_errors_total{op="recreate"}`
)

var locationSeries = []string{
	seriesAORs, seriesConflictRetried, seriesConflictGaveUp,
	seriesResyncClosed, seriesResyncMissing, seriesResyncReplaced, seriesRecreations,
	seriesExpired, seriesReadErrors, seriesWriteErrors, seriesWatchErrors,
	seriesStatusErrors, seriesRecreateErrors,
}

// series gathers reg as a scrape would and returns every counter and gauge
// as name{label="value",...} -> value.
func series(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			if ls := m.GetLabel(); len(ls) > 0 {
				parts := make([]string, len(ls))
				for i, l := range ls {
					parts[i] = fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// expect is what a test wants of the location series: for each key a
// check of its value; a series it names nothing for must be 0.
type expect map[string]func(float64) bool

func eq(want float64) func(float64) bool   { return func(v float64) bool { return v == want } }
func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }

// mismatch lists the location series of reg that are missing or fail want.
func mismatch(t *testing.T, reg prometheus.Gatherer, want expect) string {
	t.Helper()
	got := series(t, reg)
	var bad []string
	for _, key := range locationSeries {
		ok := want[key]
		if ok == nil {
			ok = eq(0)
		}
		v, served := got[key]
		switch {
		case !served:
			bad = append(bad, key+" not served")
		case !ok(v):
			bad = append(bad, fmt.Sprintf("%s = %v", key, v))
		}
	}
	return strings.Join(bad, "; ")
}

func wantSeries(t *testing.T, reg prometheus.Gatherer, want expect) {
	t.Helper()
	if bad := mismatch(t, reg, want); bad != "" {
		t.Fatalf("location metrics: %s", bad)
	}
}

// waitSeries waits for the series to come to want, and fails with what
// they were last if they do not within 5s.
func waitSeries(t *testing.T, reg prometheus.Gatherer, want expect) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		bad := mismatch(t, reg, want)
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("location metrics after 5s: %s", bad)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKVMetricsRegisteredOncePerStore: an idle store serves every series
// at zero, and a second store cannot take the same registry.
func TestKVMetricsRegisteredOncePerStore(t *testing.T) {
	url := startNATS(t).ClientURL()
	reg := prometheus.NewRegistry()
	openKVStore(t, url, WithRegisterer(reg))
	wantSeries(t, reg, nil)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewKVStore(context.Background(), js, KVConfig{}, zerolog.New(io.Discard), WithRegisterer(reg))
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("second store on one registry: %v, want AlreadyRegisteredError", err)
	}
}

// TestKVMetricsFollowRegistrations: the gauges count what the replica
// holds, a watched replica included, and leave out what has lapsed; each
// lapsed binding is counted once as expired, by whichever replica's sweep
// deleted it.
func TestKVMetricsFollowRegistrations(t *testing.T) {
	url := startNATS(t).ClientURL()
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := newKVStore(t, url, WithRegisterer(regA))
	b := newKVStore(t, url, WithRegisterer(regB))
	waitUntil(t, "replicas in sync", func() bool { return a.Synced() && b.Synced() })
	now := time.Now()
	at := func(aor, contact string, expires time.Time) Binding {
		return Binding{AOR: aor, Contact: contact, CallID: "c", CSeq: 1, Expires: expires, UpdatedAt: now}
	}
	save(t, a, at("bob@localhost", "sip:bob@10.0.0.1", now.Add(time.Hour)))
	save(t, a, at("bob@localhost", "sip:bob@10.0.0.2", now.Add(time.Hour)))
	save(t, a, at("carol@localhost", "sip:carol@10.0.0.3", now.Add(time.Hour)))
	registered := expect{seriesAORs: eq(2)}
	wantSeries(t, regA, registered)
	waitSeries(t, regB, registered)
	if a.Count() != 3 || b.Count() != 3 {
		t.Fatalf("contacts counted %d and %d, want 3", a.Count(), b.Count())
	}

	// One of bob's phones and carol's only one refresh for a moment, then
	// lapse: the sweep rewrites bob's record and deletes carol's.
	soon := time.Now().Add(200 * time.Millisecond)
	save(t, a, at("bob@localhost", "sip:bob@10.0.0.2", soon))
	save(t, a, at("carol@localhost", "sip:carol@10.0.0.3", soon))
	swept := expect{seriesAORs: eq(1), seriesExpired: atLeast(0)}
	waitSeries(t, regA, swept)
	waitSeries(t, regB, swept)
	if a.Count() != 1 || b.Count() != 1 {
		t.Fatalf("contacts counted %d and %d after the sweep, want 1", a.Count(), b.Count())
	}
	waitUntil(t, "lapsed bindings swept from the bucket", func() bool {
		_, err := a.kv.Get(context.Background(), recordKey("carol@localhost"))
		bob, _, rerr := a.read(context.Background(), "bob@localhost")
		return errors.Is(err, jetstream.ErrKeyNotFound) && rerr == nil && len(bob) == 1
	})
	// A few more sweeps: no binding is counted again.
	time.Sleep(4 * a.cfg.SweepInterval)
	expired := series(t, regA)[seriesExpired] + series(t, regB)[seriesExpired]
	if expired != 2 {
		t.Fatalf("%v bindings counted expired over both replicas, want 2", expired)
	}

	remove(t, a, "bob@localhost", "sip:bob@10.0.0.1")
	wantSeries(t, regA, expect{seriesExpired: atLeast(0)})
	waitSeries(t, regB, expect{seriesExpired: atLeast(0)})
}

// TestKVMetricsCountConflicts: every compare-and-set an update loses is
// counted, as retried or, on the last attempt, gave up; the replica that
// won counts nothing.
func TestKVMetricsCountConflicts(t *testing.T) {
	const aor = "bob@localhost"
	tests := []struct {
		name      string
		conflicts int // attempts that lose to another replica's write
		want      expect
		wantErr   error
	}{
		{name: "one conflict then success", conflicts: 1,
			want: expect{seriesConflictRetried: eq(1), seriesAORs: eq(1)}},
		{name: "conflicts until it gives up", conflicts: updateAttempts, wantErr: ErrConflict,
			want: expect{seriesConflictRetried: eq(updateAttempts - 1), seriesConflictGaveUp: eq(1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := startNATS(t).ClientURL()
			regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
			a := openKVStore(t, url, WithRegisterer(regA))
			b := openKVStore(t, url, WithRegisterer(regB))
			attempts := 0
			_, err := a.Update(context.Background(), aor, func(live []Binding) ([]Binding, error) {
				attempts++
				if attempts <= tc.conflicts {
					// Another replica writes between this read and its write.
					if _, err := b.Update(context.Background(), aor, bump(aor)); err != nil {
						return nil, err
					}
				}
				return bump(aor)(live)
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("update: %v, want %v", err, tc.wantErr)
			}
			wantSeries(t, regA, tc.want)
			wantSeries(t, regB, expect{seriesAORs: eq(1)})
		})
	}
}

// gatedKV holds the bucket's status checks while the gate is locked.
type gatedKV struct {
	jetstream.KeyValue
	gate *sync.RWMutex
}

func (k *gatedKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	k.gate.RLock()
	defer k.gate.RUnlock()
	return k.KeyValue.Status(ctx)
}

// TestKVMetricsCountResyncs: a watch ended by the bucket going away or
// being replaced counts one resync of that reason, and a bucket gone
// counts its recreation; the replica's gauges follow the new bucket.
func TestKVMetricsCountResyncs(t *testing.T) {
	tests := []struct {
		name string
		// replace does to the bucket, under a's watch, what an operator or
		// a lost server store would.
		replace func(t *testing.T, url string)
		want    expect
	}{
		{name: "bucket deleted", replace: deleteBucket,
			want: expect{seriesResyncMissing: eq(1), seriesRecreations: eq(1)}},
		{name: "bucket deleted and created again", replace: func(t *testing.T, url string) {
			deleteBucket(t, url)
			openKVStore(t, url) // another replica starting creates it
		}, want: expect{seriesResyncReplaced: eq(1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := startNATS(t).ClientURL()
			reg := prometheus.NewRegistry()
			a := openKVStore(t, url, WithRegisterer(reg))
			// Status checks wait while the bucket is being replaced, so
			// none falls between its deletion and its creation.
			gate := &sync.RWMutex{}
			a.kv = &gatedKV{KeyValue: a.kv, gate: gate}
			runKVStore(t, a)
			waitUntil(t, "replica in sync", a.Synced)
			save(t, a, bobAt("sip:bob@10.0.0.1", 1))
			wantSeries(t, reg, expect{seriesAORs: eq(1)})

			gate.Lock()
			tc.replace(t, url)
			gate.Unlock()
			// The new bucket is empty, and so is the replica once replayed.
			waitSeries(t, reg, tc.want)
			time.Sleep(4 * a.cfg.SweepInterval)
			wantSeries(t, reg, tc.want)
		})
	}
}

// faultyKV fails the requests it has an error for; with closeWatch its
// watchers are closed from the start, as the bus may close one.
type faultyKV struct {
	jetstream.KeyValue
	writeErr, statusErr, watchErr error
	closeWatch                    bool
}

type closedWatcher struct{ updates chan jetstream.KeyValueEntry }

func (w closedWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }
func (closedWatcher) Stop() error                               { return nil }

func (k *faultyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if k.writeErr != nil {
		return 0, k.writeErr
	}
	return k.KeyValue.Create(ctx, key, value, opts...)
}

func (k *faultyKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	if k.statusErr != nil {
		return nil, k.statusErr
	}
	return k.KeyValue.Status(ctx)
}

func (k *faultyKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	switch {
	case k.watchErr != nil:
		return nil, k.watchErr
	case k.closeWatch:
		w := closedWatcher{updates: make(chan jetstream.KeyValueEntry)}
		close(w.updates)
		return w, nil
	}
	return k.KeyValue.Watch(ctx, keys, opts...)
}

// faultyJS cannot create buckets.
type faultyJS struct {
	jetstream.JetStream
}

func (faultyJS) CreateOrUpdateKeyValue(context.Context, jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return nil, nats.ErrTimeout
}

// TestKVMetricsCountBusErrors: each kind of failed bus request counts
// under its op, and nothing else does: a record too large for the bus is
// refused by the bus that is there. A watch the bus closes counts a resync.
func TestKVMetricsCountBusErrors(t *testing.T) {
	const aor = "bob@localhost"
	bob := Binding{AOR: aor, Contact: "sip:bob@10.0.0.1", Expires: time.Now().Add(time.Hour), UpdatedAt: time.Now()}
	store := func(b Binding) Change {
		return func([]Binding) ([]Binding, error) { return []Binding{b}, nil }
	}
	tests := []struct {
		name string
		// fault breaks s, then does what meets the fault.
		fault func(t *testing.T, url string, s *KVStore)
		want  expect
	}{
		{name: "read", want: expect{seriesReadErrors: eq(1)}, fault: func(t *testing.T, _ string, s *KVStore) {
			s.kv = &silentKV{KeyValue: s.kv}
			if _, err := s.Lookup(context.Background(), aor); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("lookup: %v, want ErrUnavailable", err)
			}
		}},
		{name: "write", want: expect{seriesWriteErrors: eq(1)}, fault: func(t *testing.T, _ string, s *KVStore) {
			s.kv = &faultyKV{KeyValue: s.kv, writeErr: nats.ErrTimeout}
			if _, err := s.Update(context.Background(), aor, store(bob)); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("update: %v, want ErrUnavailable", err)
			}
		}},
		{name: "too large is no bus error", fault: func(t *testing.T, _ string, s *KVStore) {
			big := bob
			big.UserAgent = strings.Repeat("x", 2<<20)
			if _, err := s.Update(context.Background(), aor, store(big)); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("update: %v, want ErrTooLarge", err)
			}
		}},
		{name: "status", want: expect{seriesStatusErrors: atLeast(1)}, fault: func(t *testing.T, _ string, s *KVStore) {
			s.kv = &faultyKV{KeyValue: s.kv, statusErr: nats.ErrTimeout}
			runKVStore(t, s)
		}},
		{name: "watch", want: expect{seriesWatchErrors: atLeast(1)}, fault: func(t *testing.T, _ string, s *KVStore) {
			s.kv = &faultyKV{KeyValue: s.kv, watchErr: nats.ErrTimeout}
			runKVStore(t, s)
		}},
		{name: "watcher closed", want: expect{seriesResyncClosed: atLeast(1)}, fault: func(t *testing.T, _ string, s *KVStore) {
			s.kv = &faultyKV{KeyValue: s.kv, closeWatch: true}
			runKVStore(t, s)
		}},
		{name: "recreate", want: expect{seriesResyncMissing: eq(1), seriesRecreateErrors: atLeast(1)},
			fault: func(t *testing.T, url string, s *KVStore) {
				s.js = faultyJS{JetStream: s.js}
				runKVStore(t, s)
				waitUntil(t, "replica in sync", s.Synced)
				deleteBucket(t, url)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := startNATS(t).ClientURL()
			reg := prometheus.NewRegistry()
			s := openKVStore(t, url, WithRegisterer(reg))
			tc.fault(t, url, s)
			waitSeries(t, reg, tc.want)
		})
	}
}

// TestKVLookupAllocatesOnlyItsResult: a lookup served by the replica
// allocates the slice it returns and nothing else, metrics or not.
func TestKVLookupAllocatesOnlyItsResult(t *testing.T) {
	s := newKVStore(t, startNATS(t).ClientURL(), WithRegisterer(prometheus.NewRegistry()))
	waitUntil(t, "replica in sync", s.Synced)
	save(t, s, bobAt("sip:bob@10.0.0.1", 1))
	save(t, s, bobAt("sip:bob@10.0.0.2", 1))
	tests := []struct {
		name string
		aor  string
		want float64
	}{
		{name: "registered", aor: "bob@localhost", want: 1},
		{name: "unknown", aor: "dave@localhost", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if n := testing.AllocsPerRun(100, func() { _, _ = s.Lookup(ctx, tc.aor) }); n > tc.want {
				t.Errorf("lookup of %s: %v allocations, want %v", tc.aor, n, tc.want)
			}
		})
	}
}
