package sipproxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A message that does not parse on a TCP connection is counted as dropped
// (reason unparsable) with tcp_idle_timeout on, as it is by default: the
// stream transports log through the server's handler, which counts it.
func TestUnparsableTCPMessageIsCountedWithIdleTimeoutOn(t *testing.T) {
	cfg := idleConfig(t, false)
	p := startProxy(t, cfg)
	conn, err := net.DialTimeout("tcp", p.Addr("tcp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := io.WriteString(conn, "THIS IS NOT SIP\r\nAt all: really\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// sipgo closes the stream after the framing error.
	waitClosed(t, conn, 3*time.Second)
	counted := func() bool { return testutil.ToFloat64(p.m.dropped.WithLabelValues("unparsable")) >= 1 }
	deadline := time.Now().Add(2 * time.Second)
	for !counted() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !counted() {
		t.Fatalf("unparsable TCP message not counted in sip_proxy_dropped_total{reason=unparsable} with tcp_idle_timeout %v", cfg.TCPIdleTimeout)
	}
}
