package sipproxy

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawGateway is a minimal UDP SIP peer whose answer per request is decided
// by status(); 0 means stay silent.
type rawGateway struct {
	addr   string
	conn   *net.UDPConn
	status atomic.Int32
	// optionsStatus, when set, answers OPTIONS instead of status: a
	// gateway the probes find alive while it refuses calls.
	optionsStatus atomic.Int32
	// retryAfter, when set, goes with every 503 as Retry-After (seconds).
	retryAfter atomic.Int32
	mu         sync.Mutex
	methods    map[sip.RequestMethod]int
	// invited holds the Call-IDs of the INVITEs received: one per call,
	// whatever the retransmissions.
	invited map[string]bool
}

func newRawGateway(t *testing.T, status int) *rawGateway {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g := &rawGateway{addr: conn.LocalAddr().String(), conn: conn, methods: map[sip.RequestMethod]int{}, invited: map[string]bool{}}
	g.status.Store(int32(status))
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, src, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			req, ok := msg.(*sip.Request)
			if !ok {
				continue
			}
			g.mu.Lock()
			g.methods[req.Method]++
			if req.IsInvite() && req.CallID() != nil {
				g.invited[req.CallID().Value()] = true
			}
			g.mu.Unlock()
			code := int(g.status.Load())
			if oc := int(g.optionsStatus.Load()); oc != 0 && req.Method == sip.OPTIONS {
				code = oc
			}
			if code == 0 || req.IsAck() {
				continue
			}
			res := sip.NewResponseFromRequest(req, code, "Test", nil)
			if ra := g.retryAfter.Load(); ra != 0 && code == sip.StatusServiceUnavailable {
				res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(int(ra))))
			}
			if code == 200 && req.IsInvite() {
				res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: conn.LocalAddr().(*net.UDPAddr).Port}})
			}
			_, _ = conn.WriteToUDP([]byte(res.String()), src)
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return g
}

func (g *rawGateway) count(m sip.RequestMethod) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.methods[m]
}

// calls is the number of calls that sent the gateway an INVITE.
func (g *rawGateway) calls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.invited)
}

func pstnConfig(policy string, gws ...*rawGateway) Config {
	addrs := make([]string, len(gws))
	for i, g := range gws {
		addrs[i] = g.addr
	}
	return gatewayConfig(policy, addrs...)
}

// gatewayConfig routes numbers to one gateway group of the given
// addresses, named a, b, ...
func gatewayConfig(policy string, addrs ...string) Config {
	cfg := trustedConfig()
	group := GatewayGroup{Name: "pstn", Policy: policy}
	for i, addr := range addrs {
		group.Gateways = append(group.Gateways, Gateway{Name: string(rune('a' + i)), Addr: addr})
	}
	cfg.GatewayGroups = []GatewayGroup{group}
	cfg.Dialplan = []DialplanRule{{Name: "e164", Regex: `^\+?[0-9]+$`, Group: "pstn"}}
	return cfg
}

func TestGatewayFailover(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int
		want     int
		reached  []int // INVITEs each gateway received
	}{
		{name: "503 then silent then healthy", statuses: []int{503, 0, 200}, want: 200, reached: []int{1, 1, 1}},
		{name: "busy stops failover", statuses: []int{486, 200}, want: 486, reached: []int{1, 0}},
		{name: "all fail picks 408 over 503", statuses: []int{503, 0}, want: 408, reached: []int{1, 1}},
		{name: "only 503 becomes 500", statuses: []int{503, 503}, want: 500, reached: []int{1, 1}},
		// A silent gateway is a 408 of that branch only: the busy callee
		// behind the next one is the answer (RFC 3261 16.7 step 6).
		{name: "timeout then busy forwards busy", statuses: []int{0, 486}, want: 486, reached: []int{1, 1}},
		{name: "timeout then not found forwards not found", statuses: []int{0, 404}, want: 404, reached: []int{1, 1}},
		{name: "503 yields to another 5xx", statuses: []int{503, 502}, want: 502, reached: []int{1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var gws []*rawGateway
			for _, st := range tc.statuses {
				gws = append(gws, newRawGateway(t, st))
			}
			p := startProxy(t, pstnConfig(PolicyRoundRobin, gws...))
			caller := newPeer(t, "caller")
			res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:+15551234@localhost", "alice"))
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.want)
			}
			for i, g := range gws {
				// Retransmissions over UDP may repeat an INVITE; count distinct arrival.
				if got := min(g.count(sip.INVITE), 1); got != tc.reached[i] {
					t.Errorf("gateway %d reached %d, want %d", i, got, tc.reached[i])
				}
			}
		})
	}
}

func TestGatewaySelection(t *testing.T) {
	newGroup := func(policy string, weights ...int) *gatewayGroup {
		cfg := GatewayGroup{Name: "g", Policy: policy}
		for i, w := range weights {
			cfg.Gateways = append(cfg.Gateways, Gateway{Name: string(rune('a' + i)), Addr: "127.0.0.1:5060", Weight: w})
		}
		m, err := newMetrics(prometheusRegistry(), func() int { return 0 })
		if err != nil {
			t.Fatal(err)
		}
		return newGatewayGroups([]GatewayGroup{cfg}, m)["g"]
	}
	firstPicks := func(g *gatewayGroup, n int, callID func(i int) string) map[string]int {
		picks := map[string]int{}
		for i := range n {
			picks[g.candidates(callID(i))[0].cfg.Name]++
		}
		return picks
	}
	same := func(int) string { return "call-1" }
	tests := []struct {
		name   string
		group  *gatewayGroup
		callID func(int) string
		want   map[string]int
	}{
		{name: "round robin", group: newGroup(PolicyRoundRobin, 1, 1, 1), callID: same, want: map[string]int{"a": 2, "b": 2, "c": 2}},
		{name: "weighted 3:1", group: newGroup(PolicyWeighted, 3, 1), callID: same, want: map[string]int{"a": 6, "b": 2}},
		{name: "hash sticks to call-id", group: newGroup(PolicyHash, 1, 1, 1), callID: same, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 6
			if tc.group.policy == PolicyWeighted {
				n = 8
			}
			got := firstPicks(tc.group, n, tc.callID)
			if tc.want == nil {
				if len(got) != 1 {
					t.Fatalf("hash spread one call-id over %v", got)
				}
				return
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("picks %v, want %v", got, tc.want)
				}
			}
		})
	}
	t.Run("down gateways are skipped", func(t *testing.T) {
		g := newGroup(PolicyRoundRobin, 1, 1)
		g.gateways[0].up.Store(false)
		for range 3 {
			if c := g.candidates("x"); len(c) != 1 || c[0].cfg.Name != "b" {
				t.Fatalf("candidates %v", c)
			}
		}
	})
}

func TestGatewayProbing(t *testing.T) {
	gw := newRawGateway(t, 200)
	cfg := pstnConfig(PolicyRoundRobin, gw)
	cfg.Probe = ProbeConfig{Interval: 50 * time.Millisecond, Timeout: 100 * time.Millisecond, DownAfter: 2, UpAfter: 2}
	p := startProxy(t, cfg)
	up := func() float64 { return testutil.ToFloat64(p.m.gatewayUp.WithLabelValues("pstn", "a")) }
	waitFor(t, "first probe", func() bool { return gw.count(sip.OPTIONS) > 0 })
	if up() != 1 {
		t.Fatalf("gateway not up while answering")
	}
	gw.status.Store(0)
	waitFor(t, "gateway down", func() bool { return up() == 0 })
	caller := newPeer(t, "caller")
	if res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:15551234@localhost", "alice")); res.StatusCode != 503 {
		t.Errorf("call with group down got %d, want 503", res.StatusCode)
	}
	gw.status.Store(200)
	waitFor(t, "gateway up again", func() bool { return up() == 1 })
}

// A gateway the transport cannot reach counts as one that answered 503
// (RFC 3261 16.9), and a 503 is not forwarded upstream (16.7 step 6):
// alone it becomes a 500, without the Retry-After of our own overload.
func TestUnreachableGatewayIs500(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	healthy := newRawGateway(t, 200)
	tests := []struct {
		name     string
		gateways []Gateway
		want     int
	}{
		{name: "only gateway unreachable", gateways: []Gateway{{Name: "a", Addr: closed, Transport: "tcp"}}, want: 500},
		{name: "unreachable then healthy", gateways: []Gateway{{Name: "a", Addr: closed, Transport: "tcp"}, {Name: "b", Addr: healthy.addr}}, want: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pstnConfig(PolicyRoundRobin)
			cfg.GatewayGroups[0].Gateways = tc.gateways
			p := startProxy(t, cfg)
			caller := newPeer(t, "caller")
			res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:+15551234@localhost", "alice"))
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.want)
			}
			if h := res.GetHeader("Retry-After"); h != nil {
				t.Errorf("%d carries Retry-After %q: the proxy itself is not overloaded", res.StatusCode, h.Value())
			}
		})
	}
}

// Timer C firing on a branch that sent nothing back, not even a 100, is a
// 408 of that branch (RFC 3261 16.8): nobody rang, so the next gateway is
// tried. A ring timeout shorter than the branch timeout must not turn a dead
// gateway into a failed call.
func TestTimerCWithoutResponseFailsOver(t *testing.T) {
	silent, healthy := newRawGateway(t, 0), newRawGateway(t, 200)
	cfg := pstnConfig(PolicyRoundRobin, silent, healthy)
	cfg.InviteTimeout = time.Second
	cfg.BranchTimeout = 5 * time.Second
	p := startProxy(t, cfg)
	caller := newPeer(t, "caller")
	res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:+15551234@localhost", "alice"))
	if res.StatusCode != 200 {
		t.Fatalf("status %d, want 200 from the second gateway", res.StatusCode)
	}
	if silent.count(sip.INVITE) == 0 || healthy.count(sip.INVITE) == 0 {
		t.Errorf("INVITEs: silent %d, healthy %d; want both tried", silent.count(sip.INVITE), healthy.count(sip.INVITE))
	}
}

// Timer C fires on a ringing branch and the proxy CANCELs it; the callee
// picks up at that moment, so its 200 crosses the CANCEL. The caller has
// had no final response, so the 200 goes upstream like any other (RFC 3261
// 16.7 step 5; by 16.8 Timer C only makes the proxy CANCEL) rather than
// the callee being hung up and the caller failed with 408.
func TestAnswerCrossingTimerCCancelReachesCaller(t *testing.T) {
	callee := newUDPEnd(t)
	cfg := gatewayConfig(PolicyRoundRobin, callee.conn.LocalAddr().String())
	cfg.InviteTimeout = time.Second
	p := startProxy(t, cfg)
	proxyAddr := p.Addr("udp")

	caller := newUDPEnd(t)
	caller.send(t, proxyAddr, []byte(rawInvite(caller, "sip:+15551234@localhost", "timer-c-"+sip.GenerateTagN(8), "z9hG4bK-"+sip.GenerateTagN(10))))
	inv, _ := callee.next(t, 5*time.Second, isInvite).(*sip.Request)
	if inv == nil {
		t.Fatal("no INVITE at the callee")
	}
	respondFrom(t, callee, proxyAddr, inv, sip.StatusRinging)
	if callee.next(t, 5*time.Second, isRequest(sip.CANCEL)) == nil {
		t.Fatal("no CANCEL from Timer C")
	}
	// The answer that crossed the CANCEL.
	respondFrom(t, callee, proxyAddr, inv, sip.StatusOK,
		&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: callee.port}})
	m := caller.next(t, 5*time.Second, isAnyFinal)
	if m == nil {
		t.Fatal("caller got no final response")
	}
	if code := m.(*sip.Response).StatusCode; code != sip.StatusOK {
		t.Fatalf("caller got %d; the callee's 200 that crossed the Timer C CANCEL was not forwarded (the callee was hung up instead)", code)
	}
}
