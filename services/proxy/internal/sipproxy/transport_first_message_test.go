package sipproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testFirstMessageTimeout is short, and far below the idle timeout the
// proxies of these tests keep (1h): only the first-message bound can close
// their connections within the tests' time.
const testFirstMessageTimeout = 500 * time.Millisecond

// firstMessageConfig serves TCP and TLS with a short first-message bound.
func firstMessageConfig(t *testing.T) Config {
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	certFile, keyFile := selfSignedCert(t)
	cfg.TLS = TLSConfig{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}
	cfg.TCPFirstMessageTimeout = testFirstMessageTimeout
	return cfg
}

// closedByPeer reports whether err ends a connection the other side closed.
func closedByPeer(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// A connection that delivers no complete SIP message within
// tcp_first_message_timeout is closed and counted, whatever it sends
// meanwhile: nothing, keep-alives only, a TLS handshake it never finishes,
// or nothing after the handshake.
func TestConnectionWithoutFirstMessageIsClosed(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		// dial connects; raw reaches the TLS port without a handshake.
		raw bool
		// send is what the peer writes at the start.
		send string
		// pings sends RFC 5626 keep-alives all along.
		pings bool
	}{
		{name: "tcp, silent", transport: "tcp"},
		{name: "tcp, keep-alives only", transport: "tcp", pings: true},
		{name: "tcp, half a request", transport: "tcp", send: "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-half\r\n"},
		{name: "tls, no handshake", transport: "tls", raw: true},
		{name: "tls, handshake never finished", transport: "tls", raw: true, send: "\x16\x03\x01\x00\xa0\x01\x00\x00\x9c\x03\x03"},
		{name: "tls, silent after the handshake", transport: "tls"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProxy(t, firstMessageConfig(t))
			start := time.Now()
			var conn net.Conn
			if tc.raw {
				c, err := net.DialTimeout("tcp", p.Addr(tc.transport), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				conn = c
			} else {
				conn = dialStream(t, p, tc.transport)
			}
			if tc.send != "" {
				if _, err := io.WriteString(conn, tc.send); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 512)
			for {
				if time.Since(start) > testFirstMessageTimeout+5*time.Second {
					t.Fatalf("connection still open after %v", time.Since(start))
				}
				if tc.pings {
					if _, err := io.WriteString(conn, "\r\n\r\n"); err != nil {
						break
					}
				}
				_ = conn.SetReadDeadline(time.Now().Add(testFirstMessageTimeout / 5))
				if _, err := conn.Read(buf); closedByPeer(err) {
					break
				}
			}
			if elapsed := time.Since(start); elapsed < testFirstMessageTimeout {
				t.Fatalf("closed after %v, before the first-message timeout of %v", elapsed, testFirstMessageTimeout)
			}
			if got := testutil.ToFloat64(p.m.firstMsgClosed.WithLabelValues(tc.transport)); got != 1 {
				t.Errorf("first-message closures counted %v, want 1", got)
			}
			if got := testutil.ToFloat64(p.m.idleClosed.WithLabelValues(tc.transport)); got != 0 {
				t.Errorf("idle closures counted %v, want none", got)
			}
		})
	}
}

// A phone that sends its first REGISTER slowly, in pieces after a
// keep-alive, keeps its connection when the message is complete within
// the timeout, and keeps it long after: one message lifts the bound for
// good, and the phone answers its challenge well past the timeout.
func TestSlowFirstRegisterKeepsConnection(t *testing.T) {
	t.Parallel()
	p := startProxy(t, firstMessageConfig(t))
	start := time.Now()
	conn := dialStream(t, p, "tcp")
	phone := &streamPhone{t: t, conn: conn, r: bufio.NewReader(conn)}
	local := conn.LocalAddr().String()
	register := "REGISTER sip:localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-slow1\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:bob@localhost>;tag=slow\r\n" +
		"To: <sip:bob@localhost>\r\n" +
		"Call-ID: tcp-register@test\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:bob@" + local + ";transport=tcp>\r\n" +
		"Expires: 600\r\n" +
		"Content-Length: 0\r\n\r\n"
	// Keep-alives first, then the request in three pieces.
	phone.send("\r\n\r\n")
	third := len(register) / 3
	for _, piece := range []string{register[:third], register[third : 2*third], register[2*third:]} {
		time.Sleep(testFirstMessageTimeout / 5)
		phone.send(piece)
	}
	challenge := phone.response("tcp-register@test")
	if challenge.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("slow register after %v: %d, want 401", time.Since(start), challenge.StatusCode)
	}
	chal, err := digest.ParseChallenge(challenge.GetHeader("WWW-Authenticate").Value())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:localhost", Username: "bob", Password: testPassword, Count: 1, Cnonce: "5a1e"})
	if err != nil {
		t.Fatal(err)
	}

	time.Sleep(2*testFirstMessageTimeout - time.Since(start))
	if res := phone.register(2, creds.String()); res.StatusCode != sip.StatusOK {
		t.Fatalf("authenticated register after %v: %d", time.Since(start), res.StatusCode)
	}
	phone.send(tcpOptions(conn, "after-slow-register", "Content-Length: 0\r\n", ""))
	if res := phone.response("after-slow-register@test"); res.StatusCode != 200 {
		t.Fatalf("options after %v: %d", time.Since(start), res.StatusCode)
	}
	if got := testutil.ToFloat64(p.m.firstMsgClosed.WithLabelValues("tcp")); got != 0 {
		t.Errorf("first-message closures counted %v, want none", got)
	}
	if n := p.tcpLn.awaitingCount.Load(); n != 0 {
		t.Errorf("%d connections still awaiting a first message", n)
	}
}

// A connection closed before its first message leaves nothing behind.
func TestClosedConnectionIsForgotten(t *testing.T) {
	t.Parallel()
	p := startProxy(t, firstMessageConfig(t))
	conn := dialStream(t, p, "tcp")
	waitFor(t, "the connection awaiting a first message", func() bool { return p.tcpLn.awaitingCount.Load() == 1 })
	_ = conn.Close()
	waitFor(t, "the closed connection forgotten", func() bool { return p.tcpLn.awaitingCount.Load() == 0 })
	if got := testutil.ToFloat64(p.m.firstMsgClosed.WithLabelValues("tcp")); got != 0 {
		t.Errorf("first-message closures counted %v, want none", got)
	}
}

// Over TLS too, one message lifts the bound: a connection that sent its
// OPTIONS stays open, quiet, well past the first-message timeout.
func TestFirstMessageOverTLSKeepsConnection(t *testing.T) {
	t.Parallel()
	p := startProxy(t, firstMessageConfig(t))
	start := time.Now()
	conn := dialStream(t, p, "tls")
	r := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, tcpOptions(conn, "tls-first", "Content-Length: 0\r\n", "")); err != nil {
		t.Fatal(err)
	}
	if got := readStatus(t, conn, r); got != "SIP/2.0 200 OK" {
		t.Fatalf("options: %q", got)
	}
	time.Sleep(2*testFirstMessageTimeout - time.Since(start))
	if _, err := io.WriteString(conn, tcpOptions(conn, "tls-second", "Content-Length: 0\r\n", "")); err != nil {
		t.Fatal(err)
	}
	if got := readStatus(t, conn, r); got != "SIP/2.0 200 OK" {
		t.Fatalf("options after %v: %q", time.Since(start), got)
	}
	if got := testutil.ToFloat64(p.m.firstMsgClosed.WithLabelValues("tls")); got != 0 {
		t.Errorf("first-message closures counted %v, want none", got)
	}
}
