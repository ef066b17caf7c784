package sipproxy

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
)

// testCancelRelayTimeout keeps the wait for a CANCEL nobody holds short.
const testCancelRelayTimeout = 300 * time.Millisecond

// busReplica is a proxy replica on its own connection to the bus at url.
func busReplica(t *testing.T, url string) *runningProxy {
	t.Helper()
	cfg := trustedConfig()
	cfg.CancelRelayTimeout = testCancelRelayTimeout
	return busReplicaWith(t, url, cfg)
}

func busReplicaWith(t *testing.T, url string, cfg Config) *runningProxy {
	t.Helper()
	return busReplicaLogged(t, url, cfg, testLogger())
}

// busReplicaLogged is busReplicaWith with the proxy logging to log.
func busReplicaLogged(t *testing.T, url string, cfg Config, log zerolog.Logger) *runningProxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := bus.Connect(ctx, bus.Config{URL: url}, "proxy", testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return startProxyLogged(t, cfg, log, WithBus(client))
}

// ringingThrough has bob register through replica a and a caller's INVITE
// to him ring through a: the call a CANCEL test then cancels elsewhere.
func ringingThrough(t *testing.T, a *runningProxy) (bob *callee, caller *peer, invite *sip.Request, tx sip.ClientTransaction, done <-chan struct{}) {
	t.Helper()
	bob = newCallee(t, -1)
	if res := bob.register(t, a.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register via a: %d", res.StatusCode)
	}
	caller = newPeer(t, "caller")
	invite = caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done = inviteUntil(t, caller, a.Addr("udp"), invite, sip.StatusRinging)
	receive(t, "invite at bob", bob.invites)
	return bob, caller, invite, tx, done
}

// A load balancer sends an INVITE to replica A and its CANCEL to replica
// B, which holds no transaction for it: B offers the CANCEL over the bus,
// A cancels the ringing callee and answers the caller 487, and B answers
// the CANCEL 200.
func TestCancelReachingAnotherReplica(t *testing.T) {
	url := startNATS(t)
	a, b := busReplica(t, url), busReplica(t, url)
	bob, caller, invite, tx, done := ringingThrough(t, a)

	if res := caller.do(t, b.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusOK {
		t.Fatalf("cancel via b: %d, want 200", res.StatusCode)
	}
	receive(t, "cancel at bob", bob.cancels)
	if final := finalStatus(t, tx, done); final != sip.StatusRequestTerminated {
		t.Fatalf("invite: %d, want 487", final)
	}
	if got := testutil.ToFloat64(b.m.cancelRelays.WithLabelValues(cancelRelayAccepted)); got != 1 {
		t.Errorf("b: cancel relays accepted %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.m.cancelsRelayed.WithLabelValues(cancelRelayCancelled)); got != 1 {
		t.Errorf("a: relayed cancels taken %v, want 1", got)
	}
}

// A CANCEL no replica holds the INVITE of is answered 481 once the wait
// for one is over, and counted.
func TestCancelMatchingNoReplica(t *testing.T) {
	url := startNATS(t)
	a, b := busReplica(t, url), busReplica(t, url)
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	invite.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: caller.port,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	invite.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	cid := sip.CallIDHeader("no-such-invite@test")
	invite.AppendHeader(&cid)

	start := time.Now()
	if res := caller.do(t, b.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusCallTransactionDoesNotExists {
		t.Fatalf("cancel: %d, want 481", res.StatusCode)
	}
	if elapsed := time.Since(start); elapsed < testCancelRelayTimeout {
		t.Errorf("answered after %v, before the wait of %v was over", elapsed, testCancelRelayTimeout)
	}
	if got := testutil.ToFloat64(b.m.cancelRelays.WithLabelValues(cancelRelayUnmatched)); got != 1 {
		t.Errorf("b: unmatched cancel relays %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.m.cancelsRelayed.WithLabelValues(cancelRelayUnmatched)); got != 1 {
		t.Errorf("a: unmatched relayed cancels %v, want 1", got)
	}
}

// A replica with cancel_relay_max_pending CANCELs asking the others
// already answers the next one 481 at once, without asking.
func TestCancelRelayIsBounded(t *testing.T) {
	url := startNATS(t)
	a, b := busReplica(t, url), busReplica(t, url)
	for range cap(b.cancelSlots) {
		b.cancelSlots <- struct{}{}
	}
	t.Cleanup(func() {
		for range cap(b.cancelSlots) {
			<-b.cancelSlots
		}
	})
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	invite.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: caller.port,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	invite.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	cid := sip.CallIDHeader("flood@test")
	invite.AppendHeader(&cid)

	if res := caller.do(t, b.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusCallTransactionDoesNotExists {
		t.Fatalf("cancel: %d, want 481", res.StatusCode)
	}
	if got := testutil.ToFloat64(b.m.cancelRelays.WithLabelValues(cancelRelayLimited)); got != 1 {
		t.Errorf("b: limited cancel relays %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.m.cancelsRelayed.WithLabelValues(cancelRelayUnmatched)); got != 0 {
		t.Errorf("a: offered %v cancels, want none", got)
	}
}

// A CANCEL that carries the branch and sent-by of a ringing INVITE, which
// every hop downstream reads in its Via, but not its Request-URI, Call-ID,
// From tag or CSeq number, is not that INVITE's CANCEL (RFC 3261 9.1): the
// replica holding the INVITE keeps it ringing, and the CANCEL gets 481. The
// caller's own CANCEL still cancels it afterwards.
func TestCancelRelayMatchesTheWholeInvite(t *testing.T) {
	url := startNATS(t)
	a, b := busReplica(t, url), busReplica(t, url)
	bob, caller, invite, tx, done := ringingThrough(t, a)

	cases := []struct {
		name  string
		alter func(req *sip.Request)
	}{
		{"other call-id", func(req *sip.Request) {
			cid := sip.CallIDHeader("someone-else@test")
			req.ReplaceHeader(&cid)
		}},
		{"other from tag", func(req *sip.Request) {
			from := sip.HeaderClone(req.From()).(*sip.FromHeader)
			from.Params.Add("tag", "stranger")
			req.ReplaceHeader(from)
		}},
		{"other cseq number", func(req *sip.Request) {
			req.ReplaceHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo + 1, MethodName: sip.CANCEL})
		}},
		{"other request-uri", func(req *sip.Request) {
			req.Recipient = sip.Uri{Scheme: "sip", User: "carol", Host: "localhost"}
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forged := cancelFor(invite)
			tc.alter(forged)
			if res := caller.do(t, b.Addr("udp"), forged); res.StatusCode != sip.StatusCallTransactionDoesNotExists {
				t.Fatalf("cancel via b: %d, want 481", res.StatusCode)
			}
			// Replica a may take the offer after b gave up waiting.
			waitFor(t, "replica a to refuse the cancel", func() bool {
				return testutil.ToFloat64(a.m.cancelsRelayed.WithLabelValues(cancelRelayUnmatched)) == float64(i+1)
			})
		})
	}
	select {
	case r := <-tx.Responses():
		if r.StatusCode >= 200 {
			t.Fatalf("invite ended %d by a cancel of another call", r.StatusCode)
		}
	default:
	}
	if got := testutil.ToFloat64(a.m.cancelsRelayed.WithLabelValues(cancelRelayCancelled)); got != 0 {
		t.Fatalf("a: cancelled %v invites for cancels of other calls", got)
	}

	if res := caller.do(t, b.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusOK {
		t.Fatalf("the caller's own cancel via b: %d, want 200", res.StatusCode)
	}
	receive(t, "cancel at bob", bob.cancels)
	if final := finalStatus(t, tx, done); final != sip.StatusRequestTerminated {
		t.Fatalf("invite: %d, want 487", final)
	}
}

// retransmitUntilAnswered sends req over conn to addr, again each second as
// a UDP client retransmits, until a response comes, and returns it.
func retransmitUntilAnswered(t *testing.T, conn *net.UDPConn, addr string, req *sip.Request) *sip.Response {
	t.Helper()
	wire := []byte(req.String())
	for range 10 {
		answer := exchange(t, conn, addr, wire, time.Second)
		if answer == nil {
			continue
		}
		msg, err := sip.ParseMessage(append([]byte(nil), answer...))
		if err != nil {
			t.Fatalf("unparsable answer: %v", err)
		}
		if res, ok := msg.(*sip.Response); ok {
			return res
		}
	}
	t.Fatalf("no answer to the %s from %s", req.Method, addr)
	return nil
}

// A CANCEL sent again over UDP, its 200 lost on the way, is a
// retransmission: the replica that relayed it answers it as before,
// without offering it to the others again.
func TestCancelRetransmissionRelayedOnce(t *testing.T) {
	url := startNATS(t)
	a, b := busReplica(t, url), busReplica(t, url)
	_, _, invite, tx, done := ringingThrough(t, a)

	cancel := cancelFor(invite)
	cl := sip.ContentLengthHeader(0)
	cancel.AppendHeader(&cl)
	conn := rawUDP(t)
	for i := range 2 {
		if res := retransmitUntilAnswered(t, conn, b.Addr("udp"), cancel); res.StatusCode != sip.StatusOK {
			t.Fatalf("cancel %d via b: %d, want 200", i+1, res.StatusCode)
		}
	}
	if final := finalStatus(t, tx, done); final != sip.StatusRequestTerminated {
		t.Fatalf("invite: %d, want 487", final)
	}
	if got := testutil.ToFloat64(b.m.cancelRelays.WithLabelValues(cancelRelayAccepted)); got != 1 {
		t.Errorf("b: cancel relays accepted %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.m.cancelRelays.WithLabelValues(cancelRelayRepeated)); got < 1 {
		t.Errorf("b: retransmissions answered from memory %v, want at least 1", got)
	}
	if got := testutil.ToFloat64(a.m.cancelsRelayed.WithLabelValues(cancelRelayCancelled)); got != 1 {
		t.Errorf("a: relayed cancels taken %v, want 1", got)
	}
}

// A replica no other replica listens to answers a CANCEL it holds no
// INVITE for 481 at once, not after waiting cancel_relay_timeout for
// answers that cannot come; itself it does not count as a listener.
func TestCancelOnLoneReplicaAnsweredAtOnce(t *testing.T) {
	url := startNATS(t)
	cfg := trustedConfig()
	cfg.CancelRelayTimeout = maxCancelRelayTimeout
	alone := busReplicaWith(t, url, cfg)
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	invite.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: caller.port,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	invite.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	cid := sip.CallIDHeader("alone@test")
	invite.AppendHeader(&cid)

	start := time.Now()
	if res := caller.do(t, alone.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusCallTransactionDoesNotExists {
		t.Fatalf("cancel: %d, want 481", res.StatusCode)
	}
	if elapsed := time.Since(start); elapsed >= cfg.CancelRelayTimeout {
		t.Errorf("answered after %v, the whole wait for other replicas", elapsed)
	}
	if got := testutil.ToFloat64(alone.m.cancelRelays.WithLabelValues(cancelRelayUnmatched)); got != 1 {
		t.Errorf("unmatched cancel relays %v, want 1", got)
	}
}

// logLines is a zerolog writer a test reads back: zerolog writes each
// event, a JSON object, in one call.
type logLines struct {
	mu     sync.Mutex
	events []map[string]any
}

func (l *logLines) Write(p []byte) (int, error) {
	var ev map[string]any
	if err := json.Unmarshal(p, &ev); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
	return len(p), nil
}

// find returns the first event at level whose message starts with msg.
func (l *logLines) find(level, msg string) (map[string]any, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		if m, _ := ev["message"].(string); ev["level"] == level && strings.HasPrefix(m, msg) {
			return ev, true
		}
	}
	return nil, false
}

// await waits for an event at level whose message starts with msg and
// returns it.
func (l *logLines) await(t *testing.T, level, msg string) map[string]any {
	t.Helper()
	var ev map[string]any
	waitFor(t, level+" log "+msg, func() bool {
		var ok bool
		ev, ok = l.find(level, msg)
		return ok
	})
	return ev
}

// While the cancel relay's connection is away every CANCEL this replica
// cannot match gets 481, so its disconnects, reconnects and a close it did
// not ask for are logged, with the subject it serves; its close at stop is
// not a warning.
func TestCancelRelayConnectionStateLogged(t *testing.T) {
	cfg := trustedConfig()
	cfg.CancelRelayTimeout = testCancelRelayTimeout
	t.Run("lost and regained", func(t *testing.T) {
		logs := &logLines{}
		p := busReplicaLogged(t, startNATS(t), cfg, zerolog.New(logs).Level(zerolog.DebugLevel))
		// Logged after Run opened the relay; the log's lock orders the read.
		logs.await(t, "info", "sip proxy serving")
		nc := p.cancelConn
		if err := nc.ForceReconnect(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range []map[string]any{
			logs.await(t, "warn", "cancel relay disconnected"),
			logs.await(t, "info", "cancel relay reconnected"),
		} {
			if ev["component"] != "sipproxy" || ev["subject"] != cancelRelaySubject {
				t.Errorf("logged without the relay's fields: %v", ev)
			}
		}
		// What NATS does when it gives up reconnecting.
		nc.Close()
		logs.await(t, "warn", "cancel relay closed")
	})
	t.Run("closed at stop", func(t *testing.T) {
		logs := &logLines{}
		p := busReplicaLogged(t, startNATS(t), cfg, zerolog.New(logs).Level(zerolog.DebugLevel))
		logs.await(t, "info", "sip proxy serving")
		p.stop()
		logs.await(t, "debug", "cancel relay closed")
		for _, msg := range []string{"cancel relay closed", "cancel relay disconnected"} {
			if ev, ok := logs.find("warn", msg); ok {
				t.Errorf("stopping warned: %v", ev)
			}
		}
	})
}

// The CANCEL of a re-INVITE carries the dialog's To tag and the INVITE's
// Route. Reaching a replica other than the one holding the re-INVITE's
// transaction, it is offered to the others like any CANCEL, and reaches
// the callee with the branch of the re-INVITE it cancels (RFC 3261 9.2,
// 16.10), never as a request of its own with a fresh branch.
func TestReinviteCancelReachingAnotherReplica(t *testing.T) {
	url := startNATS(t)
	cfgA := trustedConfig()
	cfgA.CancelRelayTimeout = testCancelRelayTimeout
	a := busReplicaWith(t, url, cfgA)
	cfgB := trustedConfig()
	cfgB.CancelRelayTimeout = testCancelRelayTimeout
	// Replicas behind one service address take each other's Record-Route.
	cfgB.Aliases = []string{a.Addr("udp")}
	b := busReplicaWith(t, url, cfgB)

	callee, caller := newUDPEnd(t), newUDPEnd(t)
	ruri := "sip:callee@127.0.0.1:" + strconv.Itoa(callee.port)
	branch := "z9hG4bK-" + sip.GenerateTagN(10)
	callID := "reinvite-cancel-" + sip.GenerateTagN(8)
	msg := func(method, cseq string) string {
		return method + " " + ruri + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(caller.port) + ";branch=" + branch + ";rport\r\n" +
			"Route: <sip:" + a.Addr("udp") + ";lr>\r\n" +
			"From: <sip:alice@localhost>;tag=caller1\r\n" +
			"To: <sip:callee@localhost>;tag=callee1\r\n" +
			"Call-ID: " + callID + "\r\n" +
			"CSeq: " + cseq + "\r\n" +
			"Contact: <sip:alice@127.0.0.1:" + strconv.Itoa(caller.port) + ">\r\n" +
			"Max-Forwards: 70\r\n" +
			"Content-Length: 0\r\n\r\n"
	}
	caller.send(t, a.Addr("udp"), []byte(msg("INVITE", "2 INVITE")))
	reinv, _ := callee.next(t, 5*time.Second, isInvite).(*sip.Request)
	if reinv == nil {
		t.Fatal("no re-INVITE at the callee")
	}
	respondFrom(t, callee, a.Addr("udp"), reinv, sip.StatusRinging)
	if caller.next(t, 5*time.Second, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == sip.StatusRinging
	}) == nil {
		t.Fatal("caller got no 180 for the re-INVITE")
	}

	caller.send(t, b.Addr("udp"), []byte(msg("CANCEL", "2 CANCEL")))
	got, _ := callee.next(t, 3*time.Second, isRequest(sip.CANCEL)).(*sip.Request)
	if got == nil {
		t.Fatal("the re-INVITE was never cancelled: no CANCEL reached the callee")
	}
	want := reinv.Via().Params.GetOr("branch", "")
	if b := got.Via().Params.GetOr("branch", ""); b != want {
		t.Fatalf("CANCEL at the callee has branch %q, the re-INVITE it must cancel %q: it matches no transaction (%d Vias: sent by replica b as a new request)",
			b, want, len(got.GetHeaders("Via")))
	}
}

// Some user agents copy the To tag of a provisional response into the
// CANCEL of an initial INVITE. On a replica that does not hold the INVITE
// that CANCEL is offered to the others as well, not answered 481 as an
// in-dialog request without a Route.
func TestCancelWithToTagReachingAnotherReplica(t *testing.T) {
	url := startNATS(t)
	a, b := busReplica(t, url), busReplica(t, url)
	bob, caller, invite, tx, done := ringingThrough(t, a)

	cancel := cancelFor(invite)
	cancel.To().Params.Add("tag", "from-the-180")
	if res := caller.do(t, b.Addr("udp"), cancel); res.StatusCode != sip.StatusOK {
		t.Fatalf("cancel with a To tag via b: %d, want 200 (offered to replica a, which holds the INVITE)", res.StatusCode)
	}
	receive(t, "cancel at bob", bob.cancels)
	if final := finalStatus(t, tx, done); final != sip.StatusRequestTerminated {
		t.Fatalf("invite: %d, want 487", final)
	}
}
