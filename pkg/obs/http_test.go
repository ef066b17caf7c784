package obs

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// start runs a server on a free loopback port until the test ends; done
// yields what Run returned, once.
func start(t *testing.T, reg prometheus.Gatherer, ready func() error) (*HTTPServer, context.CancelFunc, <-chan error) {
	t.Helper()
	srv, err := NewHTTPServer("127.0.0.1:0", reg, ready, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		done <- srv.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	return srv, cancel, done
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestHTTPServerEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_calls_total", Help: "Calls."})
	reg.MustRegister(calls)
	calls.Add(3)
	var draining atomic.Bool
	srv, _, _ := start(t, reg, func() error {
		if draining.Load() {
			return errors.New("draining")
		}
		return nil
	})
	base := "http://" + srv.Addr()

	for _, path := range []string{"/healthz", "/livez", "/readyz"} {
		if code, _ := get(t, base+path); code != http.StatusOK {
			t.Errorf("%s: %d", path, code)
		}
	}
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "test_calls_total 3") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	// Only the injected registry is served, not the process-wide default.
	if strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics serves the default registry: %q", body)
	}

	draining.Store(true)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	// Liveness must stay up while unready, or a draining pod is killed.
	if code, _ := get(t, base+"/livez"); code != http.StatusOK {
		t.Errorf("/livez while not ready: %d", code)
	}
	resp, err := http.Post(base+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d", resp.StatusCode)
	}
}

// failing is a collector whose every collection fails.
type failing struct{ desc *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failing) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("source unavailable"))
}

func TestMetricsCollectorErrorIsAnswerNotPanic(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(failing{prometheus.NewDesc("test_broken", "Broken.", nil, nil)})
	srv, _, _ := start(t, reg, func() error { return nil })
	base := "http://" + srv.Addr()
	code, body := get(t, base+"/metrics")
	if code != http.StatusInternalServerError || !strings.Contains(body, "source unavailable") {
		t.Fatalf("/metrics with a failing collector: %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after a failed scrape: %d", code)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	srv, cancel, done := start(t, prometheus.NewRegistry(), func() error { return nil })
	addr := srv.Addr()
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Run returned")
	}
}

func TestRunClosesConnectionsPastShutdownBound(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	srv, cancel, done := start(t, prometheus.NewRegistry(), func() error {
		entered <- struct{}{}
		<-release
		return nil
	})
	t.Cleanup(func() { close(release) })
	reqErr := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + srv.Addr() + "/readyz")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		reqErr <- err
	}()
	<-entered
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run reported a clean stop with a request still in flight")
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return")
	}
	// The stuck request's connection must be gone with the server.
	select {
	case err := <-reqErr:
		if err == nil {
			t.Fatal("the stuck request got an answer")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("connection still open after Run returned")
	}
}

func TestNewHTTPServerRefuses(t *testing.T) {
	if _, err := NewHTTPServer("127.0.0.1:0", nil, func() error { return nil }, zerolog.Nop()); err == nil {
		t.Error("nil gatherer accepted")
	}
	if _, err := NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), nil, zerolog.Nop()); err == nil {
		t.Error("nil readiness check accepted")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = NewHTTPServer(ln.Addr().String(), prometheus.NewRegistry(), func() error { return nil }, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("address in use: %v, want an error naming it", err)
	}
}

func TestCheckListenAddr(t *testing.T) {
	for _, addr := range []string{":9102", "localhost:9102", "127.0.0.1:9101", "0.0.0.0:9101", "[::]:9101", "[::1]:0", "[fe80::1%eth0]:9101", "media-1.callgrid.svc:9102", "callgrid_proxy_1:9101"} {
		if err := CheckListenAddr(addr); err != nil {
			t.Errorf("%q refused: %v", addr, err)
		}
	}
	for _, addr := range []string{"", "9102", "localhost", "localhost:", ":http", ":65536", ":-1", "127.0.0.1:9101:1", "http://127.0.0.1:9101", "bad host:9101", "-a:9101", "a..b:9101"} {
		if err := CheckListenAddr(addr); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}
