package sipproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// dialTCP connects to the proxy's TCP listener.
func dialTCP(t *testing.T, p *runningProxy) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr("tcp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// tcpOptions is an OPTIONS for the proxy itself sent over conn, with the
// given extra header lines before the blank line and body after it.
func tcpOptions(conn net.Conn, branch, extra, body string) string {
	local := conn.LocalAddr().String()
	remote := conn.RemoteAddr().String()
	return "OPTIONS sip:" + remote + " SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-" + branch + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:alice@localhost>;tag=a1\r\n" +
		"To: <sip:" + remote + ">\r\n" +
		"Call-ID: " + branch + "@test\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		extra +
		"\r\n" + body
}

// readStatus reads one response's status line from r and skips the rest
// of it; it returns "" when the connection ended or stayed silent.
func readStatus(t *testing.T, conn net.Conn, r *bufio.Reader) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil {
		return ""
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(line)
}

// A request carrying two Content-Length values is framed by one of them
// here and, forwarded with both, by whichever the next hop picks: over a
// stream the two disagree on where the next message starts. RFC 3261
// 20.14 allows one value; such a request gets 400 and goes nowhere.
func TestDuplicateContentLengthIsRejected(t *testing.T) {
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	p := startProxy(t, cfg)
	conn := dialTCP(t, p)
	r := bufio.NewReader(conn)

	for _, tc := range []struct{ name, extra string }{
		{name: "two headers", extra: "Content-Length: 4\r\nContent-Length: 0\r\n"},
		{name: "compact form too", extra: "l: 0\r\nContent-Length: 0\r\n"},
	} {
		branch := strings.ReplaceAll(tc.name, " ", "-")
		if _, err := io.WriteString(conn, tcpOptions(conn, branch, tc.extra, "")); err != nil {
			t.Fatal(err)
		}
		if got := readStatus(t, conn, r); !strings.HasPrefix(got, "SIP/2.0 400") {
			t.Fatalf("%s: got %q, want 400", tc.name, got)
		}
	}
	// One value is fine.
	if _, err := io.WriteString(conn, tcpOptions(conn, "single", "Content-Length: 0\r\n", "")); err != nil {
		t.Fatal(err)
	}
	if got := readStatus(t, conn, r); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("single content-length: got %q, want 200", got)
	}
}

// The rate limiter sees a TCP stream as it is read, in pieces that need
// not end where messages do. Dropping one piece would splice the bytes
// around it into one message, or a message into another's body; the
// connection of a source over its rate is closed instead.
func TestRateLimitedStreamIsClosedNotSpliced(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := trustedConfig()
	cfg.TrustedNetworks = nil
	cfg.Transports = []string{"udp", "tcp"}
	cfg.RateLimit = RateLimitConfig{RequestsPerSecond: 0.001, Burst: 1, BanTime: time.Second}
	p := startProxy(t, cfg, WithClock(func() time.Time { return now }))
	conn := dialTCP(t, p)

	msg := tcpOptions(conn, "split", "Content-Length: 4\r\n", "abcd")
	half := len(msg) - 2
	if _, err := io.WriteString(conn, msg[:half]); err != nil {
		t.Fatal(err)
	}
	// The second piece is over the rate: the reader must not go on as if
	// it had not existed.
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(conn, msg[half:]); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection stayed open with a piece of its stream dropped")
		}
		return
	}
}

// RFC 3261 18.2.1 and RFC 3581 4: received is the address the request came
// from. A sender whose sent-by matches its source but that wrote its own
// received would otherwise keep it, and whatever is answered by the Via
// (a 2xx retransmission relayed statelessly) would go there.
func TestMarkReceivedReplacesTheSendersReceived(t *testing.T) {
	var via sip.ViaHeader
	via.ProtocolName, via.ProtocolVersion, via.Transport = "SIP", "2.0", "UDP"
	via.Host, via.Port = "192.0.2.7", 5060
	via.Params = sip.HeaderParams{{K: "branch", V: "z9hG4bK-1"}, {K: "received", V: "203.0.113.9"}}
	markReceived(&via, "192.0.2.7:5060")
	res := sip.NewResponse(200, "OK")
	res.AppendHeader(&via)
	res.SetTransport("UDP")
	if got := res.Destination(); got != "192.0.2.7:5060" {
		t.Fatalf("a response by that Via goes to %s, want the source 192.0.2.7:5060 (via %s)", got, via.Value())
	}
}

// A response cannot be refused for two Content-Length values; relayed
// upstream, perhaps over the caller's stream, it carries one, the body's.
func TestRelayedResponseCarriesOneContentLength(t *testing.T) {
	raw := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcg-ours\r\n" +
		"Via: SIP/2.0/TCP 192.0.2.7:40000;branch=z9hG4bK-caller;received=192.0.2.7;rport=40000\r\n" +
		"From: <sip:alice@localhost>;tag=a1\r\n" +
		"To: <sip:bob@localhost>;tag=b1\r\n" +
		"Call-ID: cl@test\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Content-Length: 40\r\n" +
		"Content-Length: 4\r\n" +
		"\r\nabcd"
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	up := withoutTopVia(msg.(*sip.Response))
	if n := contentLengths(up); n != 1 {
		t.Fatalf("%d Content-Length headers relayed:\n%s", n, up)
	}
	if cl := up.ContentLength(); cl == nil || int(*cl) != len(up.Body()) {
		t.Fatalf("Content-Length %v for a body of %d bytes", cl, len(up.Body()))
	}
	if !strings.HasSuffix(up.String(), "\r\n\r\nabcd") {
		t.Fatalf("relayed:\n%q", up.String())
	}
}
