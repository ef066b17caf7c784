package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// testInterval keeps heartbeats (and so TTLs) short in tests.
const testInterval = 100 * time.Millisecond

// fakeMedia stands in for the RTP engine: the control layer's tests are
// about capacity and claims, and count what the engine was asked to hold.
type fakeMedia struct {
	mu       sync.Mutex
	open     map[string]bool
	maxOpen  int
	failOpen error
	// What an update reports: the legs now on different codecs.
	updateTranscodes bool
}

func newFakeMedia() *fakeMedia { return &fakeMedia{open: make(map[string]bool)} }

func (f *fakeMedia) Open(_ context.Context, p OpenParams) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOpen != nil {
		return nil, f.failOpen
	}
	f.open[p.SessionID] = true
	f.maxOpen = max(f.maxOpen, len(f.open))
	return []byte("v=0 for " + p.SessionID), nil
}

func (f *fakeMedia) Answer(_ context.Context, id string, _ []byte, _ bool) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open[id] {
		return nil, false, ErrUnknownSession
	}
	return []byte("answer"), false, nil
}

func (f *fakeMedia) Update(_ context.Context, id string, _ callgridv1.Leg, _ []byte, _ bool) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open[id] {
		return nil, false, ErrUnknownSession
	}
	return []byte("update"), f.updateTranscodes, nil
}

func (f *fakeMedia) Rollback(_ context.Context, id string, _ callgridv1.Leg) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open[id] {
		return nil, false, ErrUnknownSession
	}
	f.updateTranscodes = false
	return []byte("answer"), false, nil
}

func (f *fakeMedia) Close(id string) (*callgridv1.MediaQuality, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open[id] {
		return nil, ErrUnknownSession
	}
	delete(f.open, id)
	return &callgridv1.MediaQuality{}, nil
}

func (f *fakeMedia) Shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.open)
}

func (f *fakeMedia) counts() (open, maxOpen int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.open), f.maxOpen
}

type testBus struct {
	srv      *bus.EmbeddedServer
	storeDir string
	port     int
	// interval is the heartbeat interval of the nodes and views started
	// on the bus, testInterval unless a test needs nodes to stay in view
	// through a machine too loaded to heartbeat every 100 ms.
	interval time.Duration
}

func startBus(t testing.TB) *testBus {
	t.Helper()
	dir := t.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBus{srv: srv, storeDir: dir, port: srv.Port(), interval: testInterval}
	t.Cleanup(func() { tb.srv.Shutdown() })
	return tb
}

func (tb *testBus) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", tb.port) }

// restart brings the server back on the same port and store.
func (tb *testBus) restart(t testing.TB) {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: tb.port, StoreDir: tb.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	tb.srv = srv
}

func connect(t testing.TB, tb *testBus, name string) *bus.Client {
	t.Helper()
	return connectWaiting(t, tb, name, 0)
}

// connectWaiting connects with requests bounded by requestTimeout, the
// bus's default when 0.
func connectWaiting(t testing.TB, tb *testBus, name string, requestTimeout time.Duration) *bus.Client {
	t.Helper()
	cfg := bus.Config{URL: tb.url(), ReconnectWait: 50 * time.Millisecond, RequestTimeout: requestTimeout}
	if requestTimeout > 0 {
		// The connection must outlive the longest request (Config.Validate).
		cfg.PingInterval = max(requestTimeout/bus.MaxPingsOut, bus.DefaultPingInterval)
	}
	c, err := bus.Connect(context.Background(), cfg, name, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type testNode struct {
	*Node
	media  *fakeMedia
	client *bus.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func startNode(t testing.TB, tb *testBus, id string, units int) *testNode {
	t.Helper()
	m := newFakeMedia()
	tn := startNodeOn(t, tb, id, units, m)
	tn.media = m
	return tn
}

// startNodeOn starts a node whose sessions m carries.
func startNodeOn(t testing.TB, tb *testBus, id string, units int, m Media) *testNode {
	t.Helper()
	c := connect(t, tb, "media-"+id)
	n, err := New(Config{ID: id, AdvertiseAddress: "127.0.0.1", CapacityUnits: units, HeartbeatInterval: tb.interval, DrainGrace: 5 * time.Second},
		testLogger(t), prometheus.NewRegistry(), c, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: n, client: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tn.done)
		if err := n.Run(ctx); err != nil {
			t.Errorf("node %s: %v", id, err)
		}
	}()
	t.Cleanup(tn.stop)
	return tn
}

// stop drains the node hard and waits for Run to return.
func (tn *testNode) stop() {
	tn.cancel()
	tn.StopNow()
	<-tn.done
}

type testProxy struct {
	left    chan string // node ids the view reported gone
	view    *fleet.View
	claimer *fleet.Claimer
	client  *bus.Client
}

func startProxy(t testing.TB, tb *testBus, name string, cfg fleet.ClaimConfig) *testProxy {
	t.Helper()
	// A request waits no longer than the client's request timeout, so an
	// attempt timeout longer than the bus's default needs one as long.
	c := connectWaiting(t, tb, name, max(cfg.AttemptTimeout, 0))
	ctx, cancel := context.WithCancel(context.Background())
	// Longer than JetStream's default 5 s: the embedded server, under the
	// race detector on a loaded machine, has once taken that long.
	opening, opened := context.WithTimeout(ctx, 30*time.Second)
	kv, err := fleet.OpenBucket(opening, c, tb.interval, 0)
	opened()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	left := make(chan string, 16)
	v := fleet.NewView(c, kv, tb.interval, testLogger(t), reg, fleet.WithLeaveHandler(func(id string) {
		select {
		case left <- id:
		default:
		}
	}))
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &testProxy{left: left, view: v, claimer: fleet.NewClaimer(c, v, cfg, zerolog.Nop(), reg), client: c}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func offerReq(callID string) *callgridv1.OfferRequest {
	return &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0"), Service: callgridv1.MediaService_MEDIA_SERVICE_BRIDGE}
}

func testLogger(t testing.TB) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	return zerolog.Nop()
}
