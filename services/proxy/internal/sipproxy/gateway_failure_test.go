package sipproxy

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gatewayMetrics reads one gateway's series of the failure policy.
type gatewayMetrics struct {
	p       *runningProxy
	group   string
	gateway string
}

func (m gatewayMetrics) up() float64 {
	return testutil.ToFloat64(m.p.m.gatewayUp.WithLabelValues(m.group, m.gateway))
}

func (m gatewayMetrics) failures(reason string) float64 {
	return testutil.ToFloat64(m.p.m.gatewayFailures.WithLabelValues(m.group, m.gateway, reason))
}

func (m gatewayMetrics) downs(reason string) float64 {
	return testutil.ToFloat64(m.p.m.gatewayDowns.WithLabelValues(m.group, m.gateway, reason))
}

// callGroup places one call to the pstn group and returns its final status.
func callGroup(t *testing.T, p *runningProxy, caller *peer) int {
	t.Helper()
	return caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:+15551234@localhost", "alice")).StatusCode
}

// closedTCPAddr is a loopback address nothing listens on.
func closedTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// A call that fails on a gateway (no answer at all, a transport that
// cannot reach it, a 503) takes it out of rotation at once, as Kamailio's
// ds_mark_dst does: the call itself fails over as before, and the next
// calls go straight to the healthy gateway instead of each waiting for the
// same failure. Round robin would otherwise send every other call to it.
func TestFailedCallTakesGatewayOut(t *testing.T) {
	tests := []struct {
		name   string
		status int // of a UDP gateway a; -1: a is a TCP address nobody listens on
		reason string
	}{
		{name: "silent", status: 0, reason: reasonTimeout},
		{name: "503", status: 503, reason: reasonResponse},
		{name: "unreachable over tcp", status: -1, reason: reasonTransport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			healthy := newRawGateway(t, 200)
			first := Gateway{Name: "a", Addr: closedTCPAddr(t), Transport: "tcp"}
			var raw *rawGateway
			if tc.status >= 0 {
				raw = newRawGateway(t, tc.status)
				first = Gateway{Name: "a", Addr: raw.addr}
			}
			cfg := pstnConfig(PolicyRoundRobin)
			cfg.GatewayGroups[0].Gateways = []Gateway{first, {Name: "b", Addr: healthy.addr}}
			p := startProxy(t, cfg)
			a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
			caller := newPeer(t, "caller")
			for i := range 4 {
				if got := callGroup(t, p, caller); got != 200 {
					t.Fatalf("call %d: status %d, want 200 through the healthy gateway", i, got)
				}
			}
			if got := healthy.calls(); got != 4 {
				t.Errorf("healthy gateway got %d calls, want all 4", got)
			}
			if raw != nil && raw.calls() != 1 {
				t.Errorf("gateway a got %d calls, want only the first", raw.calls())
			}
			if got := a.failures(tc.reason); got != 1 {
				t.Errorf("failures charged to gateway a: %v, want 1: only the first call may try it", got)
			}
			if a.up() != 0 || a.downs(tc.reason) != 1 {
				t.Errorf("gateway a: up %v, taken out %v times for %s; want down once", a.up(), a.downs(tc.reason), tc.reason)
			}
		})
	}
}

// What speaks of the callee (486, 404) or of one call's fate (500, not in
// the default codes) never takes a gateway out; the codes are the
// operator's to choose.
func TestFinalResponsesThatKeepGatewayUp(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		codes      []int
		wantCaller int
		wantUp     float64
	}{
		{name: "busy", status: 486, wantCaller: 486, wantUp: 1},
		{name: "not found", status: 404, wantCaller: 404, wantUp: 1},
		{name: "500 not counted by default", status: 500, wantCaller: 200, wantUp: 1},
		{name: "500 counted when configured", status: 500, codes: []int{500}, wantCaller: 200, wantUp: 0},
		{name: "503 not counted when left out", status: 503, codes: []int{500}, wantCaller: 200, wantUp: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, healthy := newRawGateway(t, tc.status), newRawGateway(t, 200)
			cfg := pstnConfig(PolicyRoundRobin, first, healthy)
			cfg.GatewayFailure.Codes = tc.codes
			p := startProxy(t, cfg)
			a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
			caller := newPeer(t, "caller")
			if got := callGroup(t, p, caller); got != tc.wantCaller {
				t.Fatalf("status %d, want %d", got, tc.wantCaller)
			}
			if a.up() != tc.wantUp {
				t.Fatalf("gateway a up %v after a %d, want %v", a.up(), tc.status, tc.wantUp)
			}
			callGroup(t, p, caller) // round robin: gateway b first
			callGroup(t, p, caller)
			wantReached := 2
			if tc.wantUp == 0 {
				wantReached = 1
			}
			if got := first.calls(); got != wantReached {
				t.Errorf("gateway a got %d of 3 calls, want %d", got, wantReached)
			}
		})
	}
}

// down_after counts consecutive failures: a call the gateway answers in
// between starts the count again.
func TestGatewayDownAfterConsecutiveFailures(t *testing.T) {
	flaky, healthy := newRawGateway(t, 0), newRawGateway(t, 200)
	cfg := pstnConfig(PolicyRoundRobin, flaky, healthy)
	cfg.BranchTimeout = 300 * time.Millisecond
	cfg.GatewayFailure.DownAfter = 2
	p := startProxy(t, cfg)
	a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
	caller := newPeer(t, "caller")
	// Round robin puts gateway a first on the odd calls.
	steps := []struct {
		status int // gateway a's behaviour for the next two calls
		wantUp float64
	}{
		{status: 0, wantUp: 1},   // one failure
		{status: 200, wantUp: 1}, // answered: the count starts again
		{status: 0, wantUp: 1},   // one failure
		{status: 0, wantUp: 0},   // the second in a row
	}
	for i, step := range steps {
		flaky.status.Store(int32(step.status))
		callGroup(t, p, caller)
		callGroup(t, p, caller)
		if a.up() != step.wantUp {
			t.Fatalf("step %d: gateway a up %v, want %v", i, a.up(), step.wantUp)
		}
	}
}

// Without probing, a gateway taken out by a failed call comes back after
// the hold-down, and takes calls again.
func TestGatewayBackAfterHoldDown(t *testing.T) {
	flaky, healthy := newRawGateway(t, 0), newRawGateway(t, 200)
	cfg := pstnConfig(PolicyRoundRobin, flaky, healthy)
	cfg.GatewayFailure.HoldDown = 200 * time.Millisecond
	p := startProxy(t, cfg)
	a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
	caller := newPeer(t, "caller")
	callGroup(t, p, caller)
	if a.up() != 0 {
		t.Fatal("gateway a not taken out by a call it never answered")
	}
	flaky.status.Store(200)
	waitFor(t, "gateway a back after the hold-down", func() bool { return a.up() == 1 })
	before := flaky.count(sip.INVITE)
	callGroup(t, p, caller)
	callGroup(t, p, caller)
	if flaky.count(sip.INVITE) == before {
		t.Fatal("gateway a back in rotation but given no call")
	}
}

// With probing on, the first successful probe after the failure brings
// the gateway back, however long the hold-down.
func TestGatewayBackOnProbe(t *testing.T) {
	refusing, healthy := newRawGateway(t, 503), newRawGateway(t, 200)
	refusing.optionsStatus.Store(200)
	cfg := pstnConfig(PolicyRoundRobin, refusing, healthy)
	cfg.Probe = ProbeConfig{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, DownAfter: 2, UpAfter: 1}
	cfg.GatewayFailure.HoldDown = time.Hour
	p := startProxy(t, cfg)
	a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
	if got := callGroup(t, p, newPeer(t, "caller")); got != 200 {
		t.Fatalf("status %d, want 200 by failover", got)
	}
	// The next probe may already have brought it back: the count says
	// it went.
	if a.downs(reasonResponse) != 1 {
		t.Fatalf("gateway a taken out %v times by its 503, want 1", a.downs(reasonResponse))
	}
	waitFor(t, "gateway a back on a probe", func() bool { return a.up() == 1 })
}

// A 503 with Retry-After says the gateway takes no requests for that long
// (RFC 3261 21.5.4): it stays out although it answers probes, and comes
// back once the time has passed.
func TestGateway503RetryAfterIsRespected(t *testing.T) {
	refusing, healthy := newRawGateway(t, 503), newRawGateway(t, 200)
	refusing.optionsStatus.Store(200)
	refusing.retryAfter.Store(2)
	cfg := pstnConfig(PolicyRoundRobin, refusing, healthy)
	cfg.Probe = ProbeConfig{Interval: 50 * time.Millisecond, Timeout: 100 * time.Millisecond, DownAfter: 2, UpAfter: 1}
	// Not counted as a code: the Retry-After alone takes it out.
	cfg.GatewayFailure.Codes = []int{500}
	p := startProxy(t, cfg)
	a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
	start := time.Now()
	if got := callGroup(t, p, newPeer(t, "caller")); got != 200 {
		t.Fatalf("status %d, want 200 by failover", got)
	}
	probes := refusing.count(sip.OPTIONS)
	waitFor(t, "probes answered after the 503", func() bool { return refusing.count(sip.OPTIONS) >= probes+3 })
	if a.up() != 0 {
		t.Fatalf("gateway a back %v after a 503 with Retry-After: 2", time.Since(start))
	}
	waitFor(t, "gateway a back after its Retry-After", func() bool { return a.up() == 1 })
	if elapsed := time.Since(start); elapsed < 2*time.Second {
		t.Fatalf("gateway a back after %v, before its Retry-After of 2s", elapsed)
	}
}

// A call the caller cancels says nothing against the gateway, even when
// the gateway had not answered at all when the branch was given up.
func TestCancelledCallIsNoGatewayFailure(t *testing.T) {
	tests := []struct {
		name    string
		gateway func(t *testing.T) string
		// waitFor is the response the caller waits for before it cancels.
		waitFor int
	}{
		{name: "silent gateway", gateway: func(t *testing.T) string { return newRawGateway(t, 0).addr }, waitFor: 100},
		{name: "ringing gateway", gateway: func(t *testing.T) string { return newCallee(t, -1).addr }, waitFor: 180},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pstnConfig(PolicyRoundRobin)
			cfg.GatewayGroups[0].Gateways = []Gateway{{Name: "a", Addr: tc.gateway(t)}}
			cfg.BranchTimeout = 300 * time.Millisecond
			p := startProxy(t, cfg)
			a := gatewayMetrics{p: p, group: "pstn", gateway: "a"}
			caller := newPeer(t, "caller")
			invite := caller.request(sip.INVITE, "sip:+15551234@localhost", "alice")
			if got := inviteThenCancel(t, p, caller, invite, tc.waitFor); got != sip.StatusRequestTerminated {
				t.Fatalf("caller got %d, want 487", got)
			}
			waitFor(t, "the branch to end", func() bool { return p.InFlight() == 0 })
			for _, reason := range callFailureReasons {
				if got := a.failures(reason); got != 0 {
					t.Errorf("cancelled call charged to the gateway as %s", reason)
				}
			}
			if a.up() != 1 {
				t.Fatal("a cancelled call took the gateway out")
			}
		})
	}
}

// inviteThenCancel sends invite through the proxy, cancels it once the
// response want arrives, and returns the INVITE's final status.
func inviteThenCancel(t *testing.T, p *runningProxy, caller *peer, invite *sip.Request, want int) int {
	t.Helper()
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, want)
	cancelReq := cancelFor(invite)
	if res := caller.do(t, p.Addr("udp"), cancelReq); res.StatusCode != 200 {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	return finalStatus(t, tx, done)
}

func TestBranchVerdict(t *testing.T) {
	policy := newFailurePolicy(GatewayFailure{}.withDefaults())
	response := func(code int, retryAfter string) *sip.Response {
		res := sip.NewResponse(code, "Test")
		if retryAfter != "" {
			res.AppendHeader(sip.NewHeader("Retry-After", retryAfter))
		}
		return res
	}
	tests := []struct {
		name           string
		r              branchResult
		want           branchVerdict
		wantReason     string
		wantRetryAfter time.Duration
	}{
		{name: "answered", r: branchResult{answered: true}, want: verdictAlive},
		{name: "cancelled while silent", r: branchResult{cancelled: true, silent: true}, want: verdictUnknown},
		{name: "busy", r: branchResult{res: response(486, "")}, want: verdictAlive},
		{name: "decline", r: branchResult{res: response(603, "")}, want: verdictAlive},
		{name: "500", r: branchResult{res: response(500, "")}, want: verdictAlive},
		{name: "503", r: branchResult{res: response(503, "")}, want: verdictFailed, wantReason: reasonResponse},
		{name: "503 retry-after", r: branchResult{res: response(503, "120 (maintenance);duration=60")}, want: verdictFailed, wantReason: reasonResponse, wantRetryAfter: 120 * time.Second},
		{name: "503 retry-after capped", r: branchResult{res: response(503, "86400")}, want: verdictFailed, wantReason: reasonResponse, wantRetryAfter: DefaultGatewayMaxRetryAfter},
		{name: "503 unreadable retry-after", r: branchResult{res: response(503, "soon")}, want: verdictFailed, wantReason: reasonResponse},
		{name: "branch timeout", r: branchResult{err: errBranchTimeout, silent: true}, want: verdictFailed, wantReason: reasonTimeout},
		{name: "timer b", r: branchResult{err: sip.ErrTransactionTimeout, silent: true}, want: verdictFailed, wantReason: reasonTimeout},
		{name: "timer c before any response", r: branchResult{err: errInviteTimeout, silent: true}, want: verdictFailed, wantReason: reasonTimeout},
		{name: "timer c while ringing", r: branchResult{err: errInviteTimeout, stop: true}, want: verdictAlive},
		{name: "transport", r: branchResult{err: sip.ErrTransactionTransport, silent: true}, want: verdictFailed, wantReason: reasonTransport},
		{name: "too large for udp", r: branchResult{err: errors.Join(sip.ErrTransactionTransport, sip.ErrUDPMTUCongestion), silent: true}, want: verdictUnknown},
		{name: "terminated here", r: branchResult{err: sip.ErrTransactionTerminated, silent: true}, want: verdictUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, fault := policy.judge(tc.r)
			if got != tc.want || fault.reason != tc.wantReason || fault.retryAfter != tc.wantRetryAfter {
				t.Fatalf("verdict %v %+v, want %v reason %q retry-after %v", got, fault, tc.want, tc.wantReason, tc.wantRetryAfter)
			}
		})
	}
	t.Run("disabled judges nothing", func(t *testing.T) {
		off := newFailurePolicy(GatewayFailure{Disabled: true}.withDefaults())
		if got, _ := off.judge(branchResult{err: errBranchTimeout, silent: true}); got != verdictUnknown {
			t.Fatalf("verdict %v", got)
		}
	})
}

// A group's failure block overrides the global one field by field, and an
// explicit empty code list counts no codes.
func TestGatewayFailureInheritance(t *testing.T) {
	cfg := Config{
		GatewayFailure: GatewayFailure{HoldDown: time.Minute, Codes: []int{500, 503}},
		GatewayGroups: []GatewayGroup{
			{Name: "inherits", Gateways: []Gateway{{Addr: "192.0.2.1:5060"}}},
			{Name: "own", Gateways: []Gateway{{Addr: "192.0.2.2:5060"}}, Failure: GatewayFailure{DownAfter: 3, Codes: []int{}}},
		},
	}.WithDefaults()
	inherits, own := cfg.GatewayGroups[0].Failure, cfg.GatewayGroups[1].Failure
	if inherits.HoldDown != time.Minute || inherits.DownAfter != 1 || len(inherits.Codes) != 2 || inherits.MaxRetryAfter != DefaultGatewayMaxRetryAfter {
		t.Errorf("inheriting group: %+v", inherits)
	}
	if own.HoldDown != time.Minute || own.DownAfter != 3 || own.Codes == nil || len(own.Codes) != 0 {
		t.Errorf("group with its own block: %+v", own)
	}
}

// A request too large for UDP cannot be sent to a UDP gateway, which is
// the request's fault: one caller's large INVITE must not take the group
// out, gateway after gateway of its failover. Too large is above
// udp_max_message_size (one datagram's 65507 bytes): the request arrives
// over TCP just below max_message_size and grows by our Via and
// Record-Route. The gateways take no TCP, which the request tries first.
func TestOversizedRequestIsNoGatewayFailure(t *testing.T) {
	first, second := newRawGateway(t, 200), newRawGateway(t, 200)
	cfg := pstnConfig(PolicyRoundRobin, first, second)
	// Gateways on UDP alone: one with no transport set would be tried over
	// TCP at its UDP port number, where another test may be listening.
	for i := range cfg.GatewayGroups[0].Gateways {
		cfg.GatewayGroups[0].Gateways[i].Transport = "udp"
	}
	cfg.Transports = []string{"udp", "tcp"}
	cfg.MaxMessageSize = 65535
	p := startProxy(t, cfg)
	conn := dialTCP(t, p)
	phone := &streamPhone{t: t, conn: conn, r: bufio.NewReader(conn)}
	local := conn.LocalAddr().String()
	head := "INVITE sip:+15551234@localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-large\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:alice@localhost>;tag=a1\r\n" +
		"To: <sip:+15551234@localhost>\r\n" +
		"Call-ID: large@test\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:alice@" + local + ";transport=tcp>\r\n" +
		"Content-Type: application/sdp\r\n"
	const inbound = DefaultUDPMaxMessageSize - 40 // above it once forwarded
	body := "v=0\r\n" + strings.Repeat("a", inbound-len(head)-len("Content-Length: 65000\r\n\r\n")-len("v=0\r\n"))
	phone.send(head + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	res := phone.response("large@test")
	for res.StatusCode < 200 {
		res = phone.response("large@test")
	}
	if res.StatusCode != sip.StatusMessageTooLarge {
		t.Fatalf("status %d %s (%v), want 513: the request must be too large for UDP, or the test proves nothing", res.StatusCode, res.Reason, res.GetHeader("Warning"))
	}
	for _, name := range []string{"a", "b"} {
		gw := gatewayMetrics{p: p, group: "pstn", gateway: name}
		if gw.up() != 1 || gw.failures(reasonTransport) != 0 {
			t.Errorf("gateway %s: up %v, transport failures %v after one oversized request", name, gw.up(), gw.failures(reasonTransport))
		}
	}
}
