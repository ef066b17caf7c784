package sipproxy

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// When the callee's 200 crosses the caller's CANCEL, the proxy ACKs and
// BYEs the callee itself. Two record-routing proxies sit between it and the
// callee (this proxy -> p2 -> p3 -> callee), so the 200 carries
// Record-Route: p3, p2, ours. From this proxy the route towards the callee
// is the entries above ours reversed (RFC 3261 12.1.2): the ACK goes to
// p2, the hop next to us, first.
func TestLateAnswerHangupFollowsReversedRecordRoute(t *testing.T) {
	callee, p2, p3 := newUDPEnd(t), newUDPEnd(t), newUDPEnd(t)
	cfg := trustedConfig()
	cfg.GatewayGroups = []GatewayGroup{{Name: "pstn", Policy: PolicyRoundRobin, Gateways: []Gateway{
		{Name: "a", Addr: callee.conn.LocalAddr().String()},
	}}}
	cfg.Dialplan = []DialplanRule{{Name: "e164", Regex: `^\+?[0-9]+$`, Group: "pstn"}}
	p := startProxy(t, cfg)
	proxyAddr := p.Addr("udp")

	caller := newUDPEnd(t)
	callID := "late-answer-" + sip.GenerateTagN(8)
	branch := "z9hG4bK-" + sip.GenerateTagN(10)
	invite := rawInvite(caller, "sip:+15551234@localhost", callID, branch)
	caller.send(t, proxyAddr, []byte(invite))

	inv, _ := callee.next(t, 5*time.Second, isInvite).(*sip.Request)
	if inv == nil {
		t.Fatal("no INVITE at the callee")
	}
	respondFrom(t, callee, proxyAddr, inv, sip.StatusRinging)
	if caller.next(t, 5*time.Second, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == sip.StatusRinging
	}) == nil {
		t.Fatal("caller got no 180")
	}
	cancel := "CANCEL sip:+15551234@localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(caller.port) + ";branch=" + branch + ";rport\r\n" +
		"From: <sip:alice@localhost>;tag=caller1\r\n" +
		"To: <sip:+15551234@localhost>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 CANCEL\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
	caller.send(t, proxyAddr, []byte(cancel))
	if callee.next(t, 5*time.Second, isRequest(sip.CANCEL)) == nil {
		t.Fatal("no CANCEL at the callee")
	}

	// The 200 that crossed the CANCEL, record-routed by p3 and p2 above us.
	res := sip.NewResponseFromRequest(inv, sip.StatusOK, "OK", nil)
	res.To().Params.Add("tag", "callee1")
	rrs := []sip.Header{
		&sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: p3.port, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}},
		&sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: p2.port, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}},
	}
	for _, h := range res.GetHeaders("Record-Route") {
		rrs = append(rrs, h)
	}
	for res.RemoveHeader("Record-Route") {
	}
	for _, h := range rrs {
		res.AppendHeader(h)
	}
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "callee", Host: "127.0.0.1", Port: callee.port}})
	callee.send(t, proxyAddr, []byte(res.String()))

	// The ACK goes to the first hop of the route set: whichever of p2, p3
	// gets it says which the proxy took for first.
	acked := make(chan string, 2)
	for name, end := range map[string]*udpEnd{"p2": p2, "p3": p3} {
		go func() {
			// No t here: the loser's read may outlast the test.
			buf := make([]byte, 65535)
			_ = end.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				n, _, err := end.conn.ReadFromUDP(buf)
				if err != nil {
					acked <- ""
					return
				}
				if m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...)); err == nil && isRequest(sip.ACK)(m) {
					acked <- name
					return
				}
			}
		}()
	}
	first := <-acked
	if first == "" {
		first = <-acked
	}
	if first != "p2" {
		t.Fatalf("ACK of the late 200 went first to %q, want p2, the hop next to this proxy (Record-Route above ours, reversed)", first)
	}
}

// When bob, behind a NAT, answers a call the caller has just CANCELled,
// the proxy's ACK and BYE must reach him over the flow his answer came
// from: his Contact names a private address nobody reaches (here a
// loopback port standing in for it), and unacknowledged he would keep a
// call nobody is on until his 2xx retransmissions give up.
func TestLateAnswerHangupReachesCalleeFlowBehindNAT(t *testing.T) {
	p := startProxy(t, trustedConfig())
	proxyAddr := p.Addr("udp")
	bob := newRawPeer(t, false)
	private := newUDPEnd(t)
	privateContact := "sip:bob@127.0.0.1:" + strconv.Itoa(private.port)
	bob.register(t, proxyAddr, privateContact)

	caller := newUDPEnd(t)
	callID := "late-nat-" + sip.GenerateTagN(8)
	branch := "z9hG4bK-" + sip.GenerateTagN(10)
	caller.send(t, proxyAddr, []byte(rawInvite(caller, "sip:bob@localhost", callID, branch)))

	inv := bob.next(t, "invite at bob's flow", isRequest(sip.INVITE))
	invReq := inv.msg.(*sip.Request)
	ringing := sip.NewResponseFromRequest(invReq, sip.StatusRinging, "Ringing", nil)
	if !ringing.To().Params.Has("tag") {
		ringing.To().Params.Add("tag", "bob1")
	}
	toTag, _ := ringing.To().Params.Get("tag")
	if err := inv.reply(ringing); err != nil {
		t.Fatal(err)
	}
	if caller.next(t, 5*time.Second, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == sip.StatusRinging
	}) == nil {
		t.Fatal("caller got no 180")
	}
	cancel := "CANCEL sip:bob@localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(caller.port) + ";branch=" + branch + ";rport\r\n" +
		"From: <sip:alice@localhost>;tag=caller1\r\n" +
		"To: <sip:bob@localhost>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 CANCEL\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
	caller.send(t, proxyAddr, []byte(cancel))
	bob.next(t, "cancel at bob's flow", isRequest(sip.CANCEL))

	// bob's 200 crossed the CANCEL; his Contact is his private address.
	ok := sip.NewResponseFromRequest(invReq, sip.StatusOK, "OK", nil)
	ok.To().Params.Add("tag", toTag)
	var contact sip.Uri
	if err := sip.ParseUri(privateContact, &contact); err != nil {
		t.Fatal(err)
	}
	ok.AppendHeader(&sip.ContactHeader{Address: contact})
	if err := inv.reply(ok); err != nil {
		t.Fatal(err)
	}

	ackAtFlow := make(chan bool, 1)
	go func() {
		// No t here: the wait at the private address may outlast the test.
		buf := make([]byte, 65535)
		_ = private.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, _, err := private.conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...)); err == nil && isRequest(sip.ACK)(m) {
				select {
				case ackAtFlow <- false:
				default:
				}
				return
			}
		}
	}()
	go func() {
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-bob.msgs:
				if isRequest(sip.ACK)(m.msg) {
					select {
					case ackAtFlow <- true:
					default:
					}
					return
				}
			case <-deadline:
				return
			}
		}
	}()
	select {
	case atFlow := <-ackAtFlow:
		if !atFlow {
			t.Fatalf("ACK of the late 200 went to bob's unreachable Contact %s, not to his flow %s", privateContact, bob.addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ACK for the late 200 anywhere")
	}
}

// A gateway silent past branch_timeout is abandoned (its client
// transaction ends) and the call fails over to the next gateway, which
// rings. The first gateway's busy, arriving then, matches no transaction
// and is dropped (RFC 6026 8.9): relayed, it would fail the call while the
// second gateway rings.
func TestStrayFinalFromAbandonedBranchDropped(t *testing.T) {
	gwA, gwB := newUDPEnd(t), newUDPEnd(t)
	p := startProxy(t, gatewayConfig(PolicyRoundRobin, gwA.conn.LocalAddr().String(), gwB.conn.LocalAddr().String()))
	proxyAddr := p.Addr("udp")

	caller := newUDPEnd(t)
	caller.send(t, proxyAddr, []byte(rawInvite(caller, "sip:+15551234@localhost", "stray-final-"+sip.GenerateTagN(8), "z9hG4bK-"+sip.GenerateTagN(10))))

	// Gateway A gets the INVITE and stays silent until the proxy moves on.
	invA, invB := failOverToRinging(t, proxyAddr, caller, gwA, gwB)

	// Gateway A's late busy, for the branch the proxy abandoned.
	before := testutil.ToFloat64(p.m.dropped.WithLabelValues("stray_response"))
	respondFrom(t, gwA, proxyAddr, invA, sip.StatusBusyHere)
	// Either it reaches the caller at once, or the proxy drops it (counted).
	var got *sip.Response
	deadline := time.Now().Add(3 * time.Second)
	for got == nil && time.Now().Before(deadline) {
		if m := caller.next(t, 50*time.Millisecond, isAnyFinal); m != nil {
			got = m.(*sip.Response)
			break
		}
		if testutil.ToFloat64(p.m.dropped.WithLabelValues("stray_response")) > before {
			break
		}
	}
	if got != nil {
		t.Fatalf("caller got %d %s from the abandoned branch to gateway a while gateway b rings", got.StatusCode, got.Reason)
	}
	// Gateway B answers: that is the caller's final response.
	respondFrom(t, gwB, proxyAddr, invB, sip.StatusOK,
		&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: gwB.port}})
	m := caller.next(t, 5*time.Second, isAnyFinal)
	if m == nil {
		t.Fatal("caller got no final response")
	}
	if code := m.(*sip.Response).StatusCode; code != sip.StatusOK {
		t.Fatalf("caller's final response %d, want 200 from gateway b", code)
	}
}

// A response whose top Via looks like ours (our host and port, our branch
// prefix) and whose second Via names a victim matches no transaction. The
// proxy must not relay it: it would deliver whatever the sender wrote,
// from the service address, to any phone or gateway the proxy talks to.
// Only a 2xx whose branch carries the proxy's signature is relayed.
func TestForgedStray2xxNotRelayed(t *testing.T) {
	p := startProxy(t, trustedConfig())
	proxyAddr := p.Addr("udp")
	host, portStr, _ := net.SplitHostPort(proxyAddr)
	attacker, victim := newUDPEnd(t), newUDPEnd(t)
	forged := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP " + host + ":" + portStr + ";branch=z9hG4bKcg0000000000000000.forged\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(victim.port) + ";branch=z9hG4bK-victim\r\n" +
		"From: <sip:x@localhost>;tag=f1\r\n" +
		"To: <sip:y@localhost>;tag=t1\r\n" +
		"Call-ID: forged-" + sip.GenerateTagN(8) + "\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"
	// The victim is a peer of the proxy: a phone's keep-alive OPTIONS.
	options := "OPTIONS sip:" + proxyAddr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(victim.port) + ";branch=z9hG4bK-" + sip.GenerateTagN(10) + ";rport\r\n" +
		"From: <sip:bob@localhost>;tag=v1\r\n" +
		"To: <sip:" + proxyAddr + ">\r\n" +
		"Call-ID: keepalive-" + sip.GenerateTagN(8) + "\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
	victim.send(t, proxyAddr, []byte(options))
	if victim.next(t, 5*time.Second, isOK) == nil {
		t.Fatal("no answer to the victim's OPTIONS")
	}
	before := testutil.ToFloat64(p.m.dropped.WithLabelValues("stray_response"))
	attacker.send(t, proxyAddr, []byte(forged))
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if m := victim.next(t, 50*time.Millisecond, func(sip.Message) bool { return true }); m != nil {
			t.Fatalf("proxy reflected a forged stray response to the victim: %s", firstLine([]byte(m.String())))
		}
		if testutil.ToFloat64(p.m.dropped.WithLabelValues("stray_response")) > before {
			break
		}
	}
	if m := victim.next(t, 100*time.Millisecond, func(sip.Message) bool { return true }); m != nil {
		t.Fatalf("proxy reflected a forged stray response to the victim: %s", firstLine([]byte(m.String())))
	}
}

// A gateway silent past branch_timeout is abandoned and the call fails over
// to the next gateway. When the first gateway answers after all, its 200
// matches no transaction: the caller is on the second branch, so the proxy
// ACKs and BYEs the first gateway instead of relaying its answer, and the
// caller gets the second gateway's.
func TestLate2xxFromAbandonedBranchHungUp(t *testing.T) {
	gwA, gwB := newUDPEnd(t), newUDPEnd(t)
	p := startProxy(t, gatewayConfig(PolicyRoundRobin, gwA.conn.LocalAddr().String(), gwB.conn.LocalAddr().String()))
	proxyAddr := p.Addr("udp")

	caller := newUDPEnd(t)
	caller.send(t, proxyAddr, []byte(rawInvite(caller, "sip:+15551234@localhost", "abandoned-2xx-"+sip.GenerateTagN(8), "z9hG4bK-"+sip.GenerateTagN(10))))
	invA, invB := failOverToRinging(t, proxyAddr, caller, gwA, gwB)

	contactA := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: gwA.port}}
	respondFrom(t, gwA, proxyAddr, invA, sip.StatusOK, contactA)
	if gwA.next(t, 5*time.Second, isRequest(sip.ACK)) == nil {
		t.Fatal("the late 200 of the abandoned branch was not acknowledged")
	}
	bye, _ := gwA.next(t, 5*time.Second, isRequest(sip.BYE)).(*sip.Request)
	if bye == nil {
		t.Fatal("the callee of the abandoned branch was not hung up")
	}
	respondFrom(t, gwA, proxyAddr, bye, sip.StatusOK)
	// Its retransmission is dropped, not relayed.
	respondFrom(t, gwA, proxyAddr, invA, sip.StatusOK, contactA)

	respondFrom(t, gwB, proxyAddr, invB, sip.StatusOK,
		&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: gwB.port}})
	m, _ := caller.next(t, 5*time.Second, isAnyFinal).(*sip.Response)
	if m == nil {
		t.Fatal("caller got no final response")
	}
	if m.StatusCode != sip.StatusOK || m.Contact() == nil || m.Contact().Address.Port != gwB.port {
		t.Fatalf("caller's final response %d from %v, want gateway b's 200", m.StatusCode, m.Contact())
	}
	if extra := caller.next(t, 300*time.Millisecond, isAnyFinal); extra != nil {
		t.Fatalf("caller got another final response: %s", firstLine([]byte(extra.String())))
	}
}

// Abandoned branches are kept for as long as their callee may repeat an
// answer, and never more than abandonedKept of them; only the first late
// answer is hung up.
func TestAbandonedBranchesExpireAndStayBounded(t *testing.T) {
	clock := &testClock{now: time.Now()}
	branches := newAbandonedBranches(32*time.Second, clock.Now)
	log := testLogger()
	invite := func(branch string) *sip.Request {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "127.0.0.1"})
		req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Params: sip.HeaderParams{{K: "branch", V: branch}}})
		req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", Host: "a"}, Params: sip.HeaderParams{{K: "tag", V: "f"}}})
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: "b"}})
		cid := sip.CallIDHeader("abandoned@test")
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
		return req
	}

	branches.remember(&log, invite("b1"))
	if _, first, ok := branches.answered("b1"); !ok || !first {
		t.Fatalf("first answer: first=%v ok=%v", first, ok)
	}
	if _, first, ok := branches.answered("b1"); !ok || first {
		t.Fatalf("retransmission: first=%v ok=%v, want a known branch already hung up", first, ok)
	}
	if _, _, ok := branches.answered("unknown"); ok {
		t.Fatal("a branch never abandoned is known")
	}
	clock.advance(32 * time.Second)
	if _, _, ok := branches.answered("b1"); ok {
		t.Fatal("a branch outlived the time its callee retransmits for")
	}

	for i := range abandonedKept + 10 {
		branches.remember(&log, invite("n"+strconv.Itoa(i)))
	}
	if len(branches.byBranch) != abandonedKept {
		t.Fatalf("%d branches kept, want %d", len(branches.byBranch), abandonedKept)
	}
	if _, _, ok := branches.answered("n0"); ok {
		t.Fatal("the oldest branch stayed past the bound")
	}
	if _, _, ok := branches.answered("n" + strconv.Itoa(abandonedKept+9)); !ok {
		t.Fatal("the newest branch is gone")
	}
}

// failOverToRinging waits for the caller's INVITE at gateway a, which
// stays silent, then at gateway b, which rings, and for the caller to hear
// the ringing; it returns both INVITEs.
func failOverToRinging(t *testing.T, proxyAddr string, caller, gwA, gwB *udpEnd) (invA, invB *sip.Request) {
	t.Helper()
	invA, _ = gwA.next(t, 5*time.Second, isInvite).(*sip.Request)
	if invA == nil {
		t.Fatal("no INVITE at gateway a")
	}
	invB, _ = gwB.next(t, 5*time.Second, isInvite).(*sip.Request)
	if invB == nil {
		t.Fatal("no failover INVITE at gateway b")
	}
	respondFrom(t, gwB, proxyAddr, invB, sip.StatusRinging)
	if caller.next(t, 5*time.Second, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == sip.StatusRinging
	}) == nil {
		t.Fatal("caller got no 180 from gateway b")
	}
	return invA, invB
}
