package sipproxy

import (
	"encoding/hex"
	"hash/fnv"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// referenceLoopHash is the loop hash as the standard library's FNV-1a
// computes it over the same fields: replicas of different versions must
// agree on it to detect a loop between them.
func referenceLoopHash(req *sip.Request) string {
	h := fnv.New64a()
	write := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	write(req.Recipient.String())
	write(req.From().Params.GetOr("tag", ""))
	write(req.To().Params.GetOr("tag", ""))
	write(req.CallID().Value())
	write(strconv.FormatUint(uint64(req.CSeq().SeqNo), 10))
	for _, hd := range req.GetHeaders("Route") {
		write(hd.(*sip.RouteHeader).Address.String())
	}
	for _, name := range []string{"Proxy-Require", "Proxy-Authorization"} {
		for _, hd := range req.GetHeaders(name) {
			write(hd.Value())
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// benchInviteWith parses the benchmark INVITE with r's replacements made.
func benchInviteWith(t *testing.T, r *strings.Replacer) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage([]byte(r.Replace(benchInvite)))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

func TestLoopHash(t *testing.T) {
	tests := []struct {
		name    string
		replace *strings.Replacer
	}{
		{name: "benchmark invite", replace: strings.NewReplacer()},
		{name: "uri parameters and to tag", replace: strings.NewReplacer(
			"INVITE sip:15550001@127.0.0.1:5060", "INVITE sip:15550001@127.0.0.1:5060;user=phone;transport=udp",
			"To: <sip:15550001@127.0.0.1:5060>", "To: <sip:15550001@127.0.0.1:5060>;tag=xyz")},
		{name: "route set", replace: strings.NewReplacer(
			"Subject: Performance Test", "Route: <sip:127.0.0.1:5060;transport=udp;lr>, <sip:192.0.2.9;lr>\r\nRoute: <sip:127.0.0.1:5060;lr>")},
		{name: "proxy headers", replace: strings.NewReplacer(
			"Subject: Performance Test", "Proxy-Require: foo\r\nProxy-Authorization: Digest username=\"a\"\r\nproxy-require: bar")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := benchInviteWith(t, tc.replace)
			if got, want := loopHash(req), referenceLoopHash(req); got != want {
				t.Errorf("loop hash %s, want %s", got, want)
			}
		})
	}
}

func TestLoopHashAllocations(t *testing.T) {
	req := benchInviteWith(t, strings.NewReplacer())
	// The hex string, the hasher the URI writes into and sipgo's text of
	// the URI's port; the old hash.Hash version made 8.
	if n := testing.AllocsPerRun(100, func() { loopHash(req) }); n > 3 {
		t.Errorf("loopHash allocates %v times, want at most 3", n)
	}
}

// The 100 the proxy builds itself says what sipgo's NewResponseFromRequest
// (with our Server header) would.
func TestTryingResponse(t *testing.T) {
	s := benchServer(t)
	tests := []struct {
		name    string
		replace *strings.Replacer
	}{
		{name: "benchmark invite", replace: strings.NewReplacer()},
		{name: "rport and timestamp", replace: strings.NewReplacer(
			"branch=z9hG4bK-4242-1-0", "branch=z9hG4bK-4242-1-0;rport\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-upstream",
			"Subject: Performance Test", "Timestamp: 54")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := benchInviteWith(t, tc.replace)
			req.SetTransport("UDP")
			req.SetSource("192.0.2.7:40000")
			want := sip.NewResponseFromRequest(req, sip.StatusTrying, "Trying", nil)
			want.AppendHeader(sip.NewHeader("Server", s.cfg.UserAgent))
			got := s.tryingResponse(req)
			if got.String() != want.String() {
				t.Errorf("100:\n%s\nwant:\n%s", got, want)
			}
			if got.Destination() != req.Source() {
				t.Errorf("100 goes to %s, want the source %s", got.Destination(), req.Source())
			}
			if v := req.Via(); v.Params.Has("received") {
				t.Errorf("the request's own Via was edited: %s", v)
			}
		})
	}
}

// A dialog record-routed through the proxy twice (out to a gateway that
// routed the call back in) spirals: its in-dialog requests pass the proxy
// twice with the same Request-URI, and only the Route set tells the second
// pass from a loop (RFC 3261 16.6 step 8 hashes the Routes too). The BYE
// must reach the callee, not come back as 482.
func TestInDialogSpiralIsNoLoop(t *testing.T) {
	p := startProxy(t, trustedConfig())
	bob := newCallee(t, 0)
	// Registering orders the callee's handler setup before its first
	// request, for the race detector; the BYE goes to its contact anyway.
	if res := bob.register(t, p.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	gw, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	caller, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caller.Close() })
	proxyRoute := "<sip:" + p.Addr("udp") + ";transport=udp;lr>"
	bye := "BYE sip:callee@" + bob.addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + caller.LocalAddr().String() + ";branch=z9hG4bK-spiral-bye\r\n" +
		"Route: " + proxyRoute + "\r\n" +
		"Route: <sip:" + gw.LocalAddr().String() + ";lr>\r\n" +
		"Route: " + proxyRoute + "\r\n" +
		"From: <sip:alice@localhost>;tag=a1\r\n" +
		"To: <sip:callee@localhost>;tag=b1\r\n" +
		"Call-ID: spiral@test\r\n" +
		"CSeq: 2 BYE\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
	proxyAddr, err := net.ResolveUDPAddr("udp", p.Addr("udp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := caller.WriteToUDP([]byte(bye), proxyAddr); err != nil {
		t.Fatal(err)
	}
	// The gateway, a loose router, takes its own Route off and sends the
	// BYE on to the next entry: the proxy again.
	buf := make([]byte, 65535)
	_ = gw.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := gw.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("first pass never reached the gateway: %v", err)
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	req.RemoveHeader("Route")
	gwHost, gwPort, _ := net.SplitHostPort(gw.LocalAddr().String())
	port, _ := strconv.Atoi(gwPort)
	req.PrependHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: gwHost, Port: port,
		Params: sip.HeaderParams{{K: "branch", V: "z9hG4bK-gw-spiral"}}})
	if _, err := gw.WriteToUDP([]byte(req.String()), proxyAddr); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-bob.byes:
		if got.Route() != nil {
			t.Errorf("BYE reached the callee with Route %v", got.Route())
		}
	case <-time.After(5 * time.Second):
		_ = gw.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, _ := gw.ReadFromUDP(buf)
		t.Fatalf("second pass never reached the callee; the gateway got %q", firstLine(buf[:n]))
	}
}
