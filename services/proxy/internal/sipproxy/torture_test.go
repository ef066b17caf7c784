package sipproxy

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// tortureDir finds RFC 4475 messages shipped in sipgo's module.
func tortureDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Skipf("cannot locate sipgo module for torture messages: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("torture messages missing: %v", err)
	}
	return dir
}

func tortureMessages(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(tortureDir(t), "*", "*.dat"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no torture files: %v", err)
	}
	msgs := make(map[string][]byte, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msgs[filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f)] = data
	}
	return msgs
}

// exchange sends raw bytes over UDP and returns the first datagram answered
// within wait, or nil.
func exchange(t *testing.T, conn *net.UDPConn, to string, data []byte, wait time.Duration) []byte {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if data != nil {
		if _, err := conn.WriteToUDP(data, addr); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// TestTortureMessages runs every RFC 4475 message through a live proxy: each
// is answered or dropped, the proxy keeps serving, and once stopped no
// goroutine (and so no transaction) is left behind.
func TestTortureMessages(t *testing.T) {
	msgs := tortureMessages(t)
	p := startProxy(t, trustedConfig())
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for name, data := range msgs {
		t.Run(name, func(t *testing.T) {
			res := exchange(t, conn, p.Addr("udp"), data, 150*time.Millisecond)
			if res != nil && !bytes.HasPrefix(res, []byte("SIP/2.0 ")) {
				t.Fatalf("answer is not a SIP response: %q", res)
			}
			// Drain anything else (e.g. a final after a 100) before the next message.
			for exchangeRead(conn, 20*time.Millisecond) {
			}
		})
	}
	options := "OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKalive\r\nFrom: <sip:t@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	// A late answer to an earlier message may still be on its way: skip
	// anything that is not the answer to this probe.
	res := exchange(t, conn, p.Addr("udp"), []byte(options), 5*time.Second)
	for res != nil && !bytes.Contains(res, []byte("Call-ID: alive")) {
		res = exchange(t, conn, p.Addr("udp"), nil, 5*time.Second)
	}
	if !bytes.HasPrefix(res, []byte("SIP/2.0 200")) {
		t.Fatalf("proxy not serving after torture: %q", res)
	}
	waitFor(t, "handlers idle", func() bool { return p.InFlight() == 0 })
	p.stop()
	// Only sipgo's and the proxy's goroutines are checked: a NATS client
	// closed by an earlier test may still be winding down, which is not ours.
	// Every transaction owns goroutines only while alive, so none may remain.
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked := proxyGoroutines()
		if len(leaked) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after stop:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxyGoroutines returns stacks of goroutines running sipgo or Server code.
func proxyGoroutines() []string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	var out []string
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		// sipgo v1.7.2's pool Clear skips client UDP connections whose
		// reference count already dropped to zero, leaving their reader
		// blocked on a socket nobody uses; the proxy cannot reach them.
		if strings.Contains(g, "sip.(*TransportUDP).readUDPConnection") {
			continue
		}
		if strings.Contains(g, "emiago/sipgo") || strings.Contains(g, "sipproxy.(*Server)") {
			out = append(out, g)
		}
	}
	return out
}

func exchangeRead(conn *net.UDPConn, wait time.Duration) bool {
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	_, _, err := conn.ReadFromUDP(buf)
	return err == nil
}

// FuzzRequestPath feeds parsed requests through the pure parts of the
// request path: validation, loop hashing, route popping, next-hop choice,
// registrar and credential parsing, NAT alias and response relaying.
func FuzzRequestPath(f *testing.F) {
	for _, data := range tortureMessages(f) {
		f.Add(data)
	}
	cfg := trustedConfig().WithDefaults()
	s := &Server{cfg: cfg, ports: map[string]int{"udp": 5060}}
	s.self = newSelfMatcher(cfg, s.ports)
	auth, err := newAuthenticator(authConfig("bob"), time.Now)
	if err != nil {
		f.Fatal(err)
	}
	s.auth = auth
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := sip.ParseMessage(data)
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		req.SetSource("192.0.2.1:5062")
		req.SetTransport("UDP")
		if validateRequest(req) != nil {
			return
		}
		loop := loopHash(req)
		_ = s.isLoop(req, loop)
		c := &call{req: req, loop: loop}
		base, _ := s.prepareForward(c)
		_, _ = nextHop(base, "UDP")
		if cts, err := registerContacts(req); err == nil {
			for _, ct := range cts {
				_ = s.grantedExpires(ct, expiresHeader(req))
				if !ct.Address.Wildcard {
					_ = contactKey(ct)
				}
			}
		}
		_ = s.auth.check(req, true)
		_ = s.auth.check(req, false)
		res := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
		res.SetSource("192.0.2.2:5060")
		_ = s.upstreamResponse(req, res)
	})
}
