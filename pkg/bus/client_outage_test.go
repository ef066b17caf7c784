package bus

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// blackhole forwards TCP to a server until stall, after which it reads and
// drops everything in both directions while keeping the sockets open: a
// server host that vanished without closing its connections.
type blackhole struct {
	ln      net.Listener
	target  string
	stalled atomic.Bool
	mu      sync.Mutex
	closed  bool
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) url() string { return "nats://" + b.ln.Addr().String() }

func (b *blackhole) accept() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", b.target)
		if err != nil {
			in.Close()
			continue
		}
		b.mu.Lock()
		if b.closed {
			// Accepted as the test ended: nobody would close these.
			b.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		b.conns = append(b.conns, in, out)
		b.mu.Unlock()
		b.wg.Go(func() { b.pipe(out, in) })
		b.wg.Go(func() { b.pipe(in, out) })
	}
}

func (b *blackhole) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if b.stalled.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	b.closed = true
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// A server that stops answering without closing the connection is given up
// within a few ping intervals: requests then fail at once as unavailable
// (a fast 503) instead of each waiting out its deadline for minutes.
func TestSilentServerIsDetected(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	hole := newBlackhole(t, srv.srv.Addr().String())
	const ping = 50 * time.Millisecond
	c, err := Connect(context.Background(), Config{URL: hole.url(), PingInterval: ping, RequestTimeout: ping, ReconnectWait: ping}, "test", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if !c.Connected() {
		t.Fatal("not connected through the forwarder")
	}

	hole.stalled.Store(true)
	stalled := time.Now()
	deadline := stalled.Add(3 * time.Second)
	for c.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("connection to a silent server still counted as up after %s", time.Since(stalled))
		}
		time.Sleep(10 * time.Millisecond)
	}
	err = c.Request(context.Background(), "delete", "callgrid.v1.test.silent", &callgridv1.DeleteRequest{}, new(callgridv1.DeleteReply))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("request once the server went silent: %v, want ErrUnavailable", err)
	}
}
