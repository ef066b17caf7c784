package sipproxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func rawRequest(method, ruri, fromUser string, extra string) []byte {
	return fmt.Appendf(nil, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK%s%d\r\nFrom: <sip:%s@localhost>;tag=f1\r\nTo: <%s>\r\nCall-ID: %s-%d@test\r\nCSeq: 1 %s\r\nContact: <sip:%s@127.0.0.1:9>\r\n%sContent-Length: 0\r\n\r\n",
		method, ruri, method, time.Now().UnixNano(), fromUser, ruri, method, time.Now().UnixNano(), method, fromUser, extra)
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		name    string
		trusted bool
		drain   bool
		msg     []byte
		want    string // status line prefix; "" means no answer
	}{
		{name: "untrusted invite challenged", msg: rawRequest("INVITE", "sip:bob@localhost", "alice", ""), want: "SIP/2.0 407"},
		{name: "untrusted message challenged", msg: rawRequest("MESSAGE", "sip:bob@localhost", "alice", ""), want: "SIP/2.0 407"},
		{name: "foreign domain from untrusted", msg: rawRequest("INVITE", "sip:bob@example.org", "alice", ""), want: "SIP/2.0 403"},
		{name: "trusted unknown user", trusted: true, msg: rawRequest("INVITE", "sip:nobody@localhost", "alice", ""), want: "SIP/2.0 404"},
		{name: "max-forwards exhausted", trusted: true, msg: rawRequest("INVITE", "sip:bob@localhost", "alice", "Max-Forwards: 0\r\n"), want: "SIP/2.0 483"},
		{name: "options to proxy", msg: rawRequest("OPTIONS", "sip:localhost", "alice", ""), want: "SIP/2.0 200"},
		{name: "options while draining", drain: true, msg: rawRequest("OPTIONS", "sip:localhost", "alice", ""), want: "SIP/2.0 503"},
		{name: "invite while draining", drain: true, trusted: true, msg: rawRequest("INVITE", "sip:bob@localhost", "alice", ""), want: "SIP/2.0 503"},
		{name: "in-dialog without our route", trusted: true, msg: rawRequest("BYE", "sip:bob@127.0.0.1:9", "alice", ""), want: ""},
		{name: "blocklisted user agent dropped", msg: rawRequest("INVITE", "sip:bob@localhost", "alice", "User-Agent: friendly-scanner\r\n"), want: ""},
		{name: "unsupported uri scheme", trusted: true, msg: rawRequest("INVITE", "tel:+15551234", "alice", ""), want: "SIP/2.0 416"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("alice", "bob")
			cfg.UserAgentBlocklist = []string{"friendly-scanner"}
			if tc.trusted {
				cfg.TrustedNetworks = []string{"127.0.0.0/8"}
			}
			p := startProxy(t, cfg)
			if tc.drain {
				p.Drain()
			}
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			msg := tc.msg
			if tc.name == "in-dialog without our route" {
				msg = bytes.Replace(msg, []byte("To: <sip:bob@127.0.0.1:9>"), []byte("To: <sip:bob@127.0.0.1:9>;tag=t1"), 1)
				tc.want = "SIP/2.0 404"
			}
			wait := 5 * time.Second
			if tc.want == "" {
				wait = 300 * time.Millisecond
			}
			res := exchange(t, conn, p.Addr("udp"), msg, wait)
			for bytes.HasPrefix(res, []byte("SIP/2.0 100")) {
				res = exchange(t, conn, p.Addr("udp"), nil, wait)
			}
			if tc.want == "" {
				if res != nil {
					t.Fatalf("expected silence, got %q", firstLine(res))
				}
				return
			}
			if !bytes.HasPrefix(res, []byte(tc.want)) {
				t.Fatalf("got %q, want %s", firstLine(res), tc.want)
			}
		})
	}
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\r'); i > 0 {
		return string(b[:i])
	}
	return string(b)
}

// TestLoopDetected points a gateway at the proxy itself: the request spirals
// once (new Request-URI), then comes back unchanged and is refused with 482.
func TestLoopDetected(t *testing.T) {
	port := freeUDPPort(t)
	self := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := trustedConfig()
	cfg.ListenAddr = self
	cfg.Transports = []string{"udp"}
	cfg.GatewayGroups = []GatewayGroup{{Name: "self", Gateways: []Gateway{{Name: "me", Addr: self}}}}
	cfg.Dialplan = []DialplanRule{{Name: "all", Prefix: "1", Group: "self"}}
	p := startProxy(t, cfg)
	caller := newPeer(t, "caller")
	res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:1555@localhost", "alice"))
	if res.StatusCode != sip.StatusLoopDetected {
		t.Fatalf("status %d, want 482", res.StatusCode)
	}
	if got := testutil.ToFloat64(p.m.forwardFailures.WithLabelValues("loop")); got != 1 {
		t.Errorf("loop failures %v, want 1", got)
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newRateLimiter(RateLimitConfig{RequestsPerSecond: 10, Burst: 3, BanTime: time.Second, MaxSources: 2}, func() time.Time { return now })
	a, b, c := sourceIP("192.0.2.1:1"), sourceIP("192.0.2.2:1"), sourceIP("192.0.2.3:1")
	steps := []struct {
		name    string
		advance time.Duration
		ip      string
		want    bool
	}{
		{name: "burst 1", ip: "a", want: true},
		{name: "burst 2", ip: "a", want: true},
		{name: "burst 3", ip: "a", want: true},
		{name: "over burst bans", ip: "a", want: false},
		{name: "other source unaffected", ip: "b", want: true},
		{name: "table full refuses newcomer", ip: "c", want: false},
		{name: "still banned after refill time", advance: 500 * time.Millisecond, ip: "a", want: false},
		{name: "ban expires", advance: 600 * time.Millisecond, ip: "a", want: true},
	}
	ips := map[string]netip.Addr{"a": a, "b": b, "c": c}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			now = now.Add(st.advance)
			if got := l.allow(ips[st.ip]); got != st.want {
				t.Fatalf("allow(%s) = %v, want %v", st.ip, got, st.want)
			}
		})
	}
}

// A request to proxy that requires extensions of the proxy is refused with
// 420 naming them (RFC 3261 16.3 step 5), before it reaches anyone; the
// proxy answering a request itself is no proxy and ignores the header.
func TestProxyRequireRefused(t *testing.T) {
	gw := newRawGateway(t, 200)
	p := startProxy(t, pstnConfig(PolicyRoundRobin, gw))
	caller := newPeer(t, "caller")
	tests := []struct {
		name    string
		ruri    string
		method  sip.RequestMethod
		require []string
		want    int
	}{
		{name: "unknown extensions", method: sip.INVITE, ruri: "sip:+15551234@localhost", require: []string{"foo, bar", "baz"}, want: 420},
		{name: "none required", method: sip.INVITE, ruri: "sip:+15551234@localhost", want: 200},
		{name: "options to the proxy itself", method: sip.OPTIONS, ruri: "sip:localhost", require: []string{"foo"}, want: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := gw.count(sip.INVITE)
			req := caller.request(tc.method, tc.ruri, "alice")
			for _, v := range tc.require {
				req.AppendHeader(sip.NewHeader("Proxy-Require", v))
			}
			res := caller.do(t, p.Addr("udp"), req)
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.want)
			}
			if tc.want != 420 {
				return
			}
			if h := res.GetHeader("Unsupported"); h == nil || h.Value() != "foo, bar, baz" {
				t.Errorf("Unsupported %v, want foo, bar, baz", h)
			}
			if got := gw.count(sip.INVITE); got != before {
				t.Errorf("the refused INVITE reached the gateway")
			}
		})
	}
}

// OPTIONS for the proxy, sent through it as the outbound proxy (its own
// Route entry preloaded), is for the proxy still once that entry is popped
// (RFC 3261 16.4): answered 200 like one without the Route, not proxied.
func TestOptionsThroughOurRouteAnsweredLocally(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("alice")
	p := startProxy(t, cfg)
	conn := rawUDP(t)
	tests := []struct {
		name  string
		route string
		want  string
	}{
		{name: "our route", route: "Route: <sip:" + p.Addr("udp") + ";transport=udp;lr>\r\n", want: "SIP/2.0 200"},
		{name: "no route", want: "SIP/2.0 200"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := exchange(t, conn, p.Addr("udp"), rawRequest("OPTIONS", "sip:localhost", "alice", tc.route), 5*time.Second)
			if !bytes.HasPrefix(res, []byte(tc.want)) {
				t.Fatalf("got %q, want %s", firstLine(res), tc.want)
			}
		})
	}
}
