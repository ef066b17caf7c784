package bus

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

func TestRequestReplyWithDeadlineAndNoResponders(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := Connect(context.Background(), Config{URL: srv.URL()}, "test", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	var sawDeadline bool
	sub, err := Serve(c, "callgrid.v1.test.echo", "", "echo", func(ctx context.Context, req *callgridv1.DeleteRequest) *callgridv1.DeleteReply {
		_, sawDeadline = ctx.Deadline()
		return &callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_OK, Detail: req.GetSessionId()}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	reply := new(callgridv1.DeleteReply)
	if err := c.Request(context.Background(), "echo", "callgrid.v1.test.echo", &callgridv1.DeleteRequest{SessionId: "s1"}, reply); err != nil {
		t.Fatal(err)
	}
	if reply.GetDetail() != "s1" || !sawDeadline {
		t.Fatalf("reply %v, handler saw deadline %v", reply, sawDeadline)
	}

	start := time.Now()
	err = c.Request(context.Background(), "echo", "callgrid.v1.test.nobody", &callgridv1.DeleteRequest{}, reply)
	if !errors.Is(err, ErrNoResponders) || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("request to nobody: %v after %s", err, time.Since(start))
	}
}

func TestZeroConfigJoinsAnEmbeddedBus(t *testing.T) {
	// The first service starts the embedded server; a second with the same
	// zero config joins it instead of failing on the port.
	cfg := Config{Embedded: EmbeddedConfig{Port: freePort(t), StoreDir: t.TempDir()}}
	first, err := Connect(context.Background(), cfg, "first", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if first.Embedded() == nil {
		t.Fatal("first client did not start the embedded server")
	}
	second, err := Connect(context.Background(), cfg, "second", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.Embedded() != nil || !second.Connected() {
		t.Fatal("second client should have joined the running server")
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	err := Config{RequestTimeout: -1, Embedded: EmbeddedConfig{Port: 70000}}.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, field := range []string{"bus.request_timeout", "bus.embedded.port"} {
		if !contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

// Closing the client is no loss of the bus: the disconnect counter, which
// alerts watch, stays at zero through a clean shutdown.
func TestCloseIsNotCountedAsADisconnect(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := Connect(context.Background(), Config{URL: srv.URL()}, "test", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Close waits for the closed callback, which NATS queues after the
	// disconnect callback on the same goroutine: both have run.
	if got := testutil.ToFloat64(c.metrics.disconnects); got != 0 {
		t.Fatalf("disconnects after a clean Close = %v, want 0", got)
	}
	if got := testutil.ToFloat64(c.metrics.connected); got != 0 {
		t.Fatalf("connected after Close = %v, want 0", got)
	}
}

// Replicas beyond one on the embedded bus are refused at start by name,
// not by the first stream the server will not create.
func TestConfigRefusesReplicasOnTheEmbeddedBus(t *testing.T) {
	err := Config{Replicas: 3}.Validate()
	if err == nil || !contains(err.Error(), "bus.replicas") {
		t.Fatalf("Validate() = %v, want an error naming bus.replicas", err)
	}
	if err := (Config{URL: "nats://nats:4222", Replicas: 3}).Validate(); err != nil {
		t.Fatalf("3 replicas on a cluster refused: %v", err)
	}
	// What the error would otherwise be found by: the server refuses.
	c, _ := connectTestBus(t, prometheus.NewRegistry())
	c.cfg.Replicas = 3
	if _, err := c.EnsureEventsStream(context.Background()); err == nil {
		t.Fatal("a single server created a stream with 3 replicas")
	}
}

// The drain timeout configured is the one NATS applies: left to its own
// 30 s, it would cut a longer drain short, and Close wait for nothing.
func TestDrainTimeoutReachesTheConnection(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	for _, tc := range []struct {
		name       string
		configured time.Duration
		want       time.Duration
	}{
		{name: "default", want: DefaultDrainTimeout},
		{name: "beyond nats's 30s", configured: 45 * time.Second, want: 45 * time.Second},
		{name: "short", configured: 300 * time.Millisecond, want: 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Connect(context.Background(), Config{URL: srv.URL(), DrainTimeout: tc.configured}, "test", zerolog.Nop(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			if got := c.Conn().Opts.DrainTimeout; got != tc.want {
				t.Fatalf("connection drain timeout %s, want %s", got, tc.want)
			}
		})
	}
}

// A ping interval under which a pong may come later than a request's reply
// may would drop live connections to a merely slow server: refused at start,
// with the field named, rather than as a reconnect loop in production.
func TestConfigRefusesPingIntervalShorterThanRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{name: "defaults", cfg: Config{}, ok: true},
		{name: "bare yaml number is nanoseconds", cfg: Config{PingInterval: 2}},
		{name: "pongs allowed less than the request timeout", cfg: Config{PingInterval: 100 * time.Millisecond, RequestTimeout: time.Second}},
		{name: "pongs allowed the request timeout", cfg: Config{PingInterval: 250 * time.Millisecond, RequestTimeout: 500 * time.Millisecond}, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "bus.ping_interval")) {
				t.Fatalf("Validate() = %v, want an error naming bus.ping_interval", err)
			}
		})
	}
}
