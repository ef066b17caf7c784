package sipproxy

import (
	"bytes"
	"context"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
	"callgrid.dev/services/proxy/internal/location"
)

// forkPhone is a registered phone that rings (180) on an INVITE and then
// answers with the status the test sends on answer, or is cancelled. It
// records what reached it.
type forkPhone struct {
	*peer
	name    string
	invites chan *sip.Request
	cancels chan *sip.Request
	acks    chan *sip.Request
	answer  chan int
	// sdp is the body of its 2xx.
	sdp []byte
}

func newForkPhone(t *testing.T, name string) *forkPhone {
	t.Helper()
	ph := &forkPhone{
		name:    name,
		invites: make(chan *sip.Request, 10),
		cancels: make(chan *sip.Request, 10),
		acks:    make(chan *sip.Request, 10),
		answer:  make(chan int, 1),
	}
	ph.peer = newPeerWith(t, name, func(srv *sipgo.Server, port int) {
		srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			ph.invites <- req
			ringing := sip.NewResponseFromRequest(req, sip.StatusRinging, "Ringing", nil)
			_ = tx.Respond(ringing)
			toTag, _ := ringing.To().Params.Get("tag")
			cancelled := make(chan struct{})
			tx.OnCancel(func(r *sip.Request) {
				ph.cancels <- r
				close(cancelled)
			})
			var code int
			select {
			case <-cancelled:
				return
			case <-tx.Done():
				return
			case code = <-ph.answer:
			}
			var body []byte
			if code < 300 {
				body = ph.sdp
			}
			res := sip.NewResponseFromRequest(req, code, "Answer", body)
			res.To().Params.Add("tag", toTag)
			if code < 300 {
				res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: name, Host: "127.0.0.1", Port: port}})
				if body != nil {
					ct := sip.ContentTypeHeader("application/sdp")
					res.AppendHeader(&ct)
				}
			}
			_ = tx.Respond(res)
		})
		srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { ph.acks <- req })
		srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
		})
	})
	return ph
}

// registerQ registers the phone as bob, with the q parameter q unless "".
func (ph *forkPhone) registerQ(t *testing.T, p *runningProxy, q string) {
	t.Helper()
	req := ph.registerReq("bob", 600)
	if q != "" {
		req.Contact().Params.Add("q", q)
	}
	if res := ph.register(t, p.Addr("udp"), req, testPassword); res.StatusCode != sip.StatusOK {
		t.Fatalf("register %s: %d", ph.name, res.StatusCode)
	}
}

// nothing fails when ch receives within wait.
func nothing(t *testing.T, what string, ch <-chan *sip.Request, wait time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: got %s", what, r.StartLine())
	case <-time.After(wait):
	}
}

// reasonOf is the Reason header of req, "" without one.
func reasonOf(req *sip.Request) string {
	if h := req.GetHeader("Reason"); h != nil {
		return h.Value()
	}
	return ""
}

// inviteRinging sends invite to addr and returns its client transaction
// once n forks have answered 180 (each its own To tag), so that every one
// of them can be cancelled, with the channel inviteUntil returns.
func inviteRinging(t *testing.T, caller *peer, addr string, invite *sip.Request, n int) (sip.ClientTransaction, <-chan struct{}) {
	t.Helper()
	invite.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	tx, err := caller.cli.TransactionRequest(ctx, invite)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tx.Terminate)
	tags := map[string]bool{}
	for len(tags) < n {
		select {
		case r := <-tx.Responses():
			if r.StatusCode == sip.StatusRinging {
				tags[toTag(r)] = true
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d forks rang", len(tags), n)
		}
	}
	return tx, ctx.Done()
}

// noPumpsLeft waits for the proxy to finish its requests and checks that
// no branch pump outlived them.
func noPumpsLeft(t *testing.T, p *runningProxy) {
	t.Helper()
	waitFor(t, "handlers idle", func() bool { return p.InFlight() == 0 })
	waitFor(t, "branch pumps gone", func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "sipproxy.(*fork).pump")
	})
}

// TestForkRingsContactsAtOnce: a user with two registered contacts of
// equal q gets both rung before either answers; the first to answer gets
// the call (its ACK relayed to it), the other a CANCEL saying the call was
// completed elsewhere, whose 487 goes nowhere: the caller gets one 200.
func TestForkRingsContactsAtOnce(t *testing.T) {
	cfg := trustedConfig()
	cfg.BranchTimeout = 5 * time.Second
	p := startProxy(t, cfg)
	desk, mobile := newForkPhone(t, "desk"), newForkPhone(t, "mobile")
	desk.registerQ(t, p, "")
	mobile.registerQ(t, p, "1.0")

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	var mu sync.Mutex
	var other2xx []*sip.Response
	tx, done := inviteRinging(t, caller, p.Addr("udp"), invite, 2)
	tx.OnRetransmission(func(r *sip.Response) {
		mu.Lock()
		other2xx = append(other2xx, r)
		mu.Unlock()
	})
	atDesk := receive(t, "invite at desk", desk.invites)
	atMobile := receive(t, "invite at mobile", mobile.invites)
	if a, b := atDesk.Via().Params.GetOr("branch", ""), atMobile.Via().Params.GetOr("branch", ""); a == b || !p.signedBranch(a, invite.CallID().Value()) || !p.signedBranch(b, invite.CallID().Value()) {
		t.Fatalf("branches %q and %q: want two different signed ones", a, b)
	}

	mobile.answer <- sip.StatusOK
	var res *sip.Response
	for res == nil {
		select {
		case r := <-tx.Responses():
			if r.StatusCode >= 200 {
				res = r
			}
		case <-done:
			t.Fatal("no final response")
		}
	}
	if res.StatusCode != sip.StatusOK {
		t.Fatalf("caller got %d, want 200", res.StatusCode)
	}
	cancel := receive(t, "cancel at desk", desk.cancels)
	if got := reasonOf(cancel); got != `SIP;cause=200;text="Call completed elsewhere"` {
		t.Fatalf("desk's CANCEL has Reason %q", got)
	}
	ack := inDialog(sip.ACK, invite, res, invite.CSeq().SeqNo)
	ack.SetDestination(routeDestination(ack))
	if err := caller.cli.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
	receive(t, "ack at mobile", mobile.acks)
	nothing(t, "ack at desk", desk.acks, 200*time.Millisecond)
	select {
	case r := <-tx.Responses():
		t.Fatalf("caller got %d after its 200", r.StatusCode)
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	for _, r := range other2xx {
		if toTag(r) != toTag(res) {
			t.Errorf("caller got a second 2xx from %s", toTag(r))
		}
	}
	mu.Unlock()
	noPumpsLeft(t, p)
	for result, want := range map[string]float64{forkAnswered: 1, forkElsewhere: 1, forkFailed: 0} {
		if got := testutil.ToFloat64(p.m.forkedBranches.WithLabelValues(result)); got != want {
			t.Errorf("forked branches %s: %v, want %v", result, got, want)
		}
	}
}

// TestForkFinalAnswers: with every contact rung at once, the caller gets
// the best of their answers (RFC 3261 16.7 step 6), and a 6xx ends the
// others at once, with its cause in their CANCEL.
func TestForkFinalAnswers(t *testing.T) {
	tests := []struct {
		name          string
		desk, mobile  int // 0: is cancelled
		want          int
		cancelMobile  string
		cancelledDesk bool
	}{
		{name: "both busy", desk: sip.StatusBusyHere, mobile: sip.StatusBusyHere, want: sip.StatusBusyHere},
		{name: "busy and unavailable", desk: sip.StatusTemporarilyUnavailable, mobile: sip.StatusBusyHere, want: sip.StatusBusyHere},
		{name: "one declines", desk: 603, want: 603, cancelMobile: `SIP;cause=603;text="Answer"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, trustedConfig())
			desk, mobile := newForkPhone(t, "desk"), newForkPhone(t, "mobile")
			desk.registerQ(t, p, "0.7")
			mobile.registerQ(t, p, "0.700")
			caller := newPeer(t, "caller")
			invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
			tx, done := inviteRinging(t, caller, p.Addr("udp"), invite, 2)
			receive(t, "invite at desk", desk.invites)
			receive(t, "invite at mobile", mobile.invites)
			desk.answer <- tc.desk
			if tc.mobile != 0 {
				// After the desk's answer is in: the order is the test's.
				time.Sleep(50 * time.Millisecond)
				mobile.answer <- tc.mobile
			}
			if got := finalStatus(t, tx, done); got != tc.want {
				t.Fatalf("caller got %d, want %d", got, tc.want)
			}
			if tc.cancelMobile != "" {
				if got := reasonOf(receive(t, "cancel at mobile", mobile.cancels)); got != tc.cancelMobile {
					t.Fatalf("mobile's CANCEL has Reason %q, want %q", got, tc.cancelMobile)
				}
			}
			noPumpsLeft(t, p)
		})
	}
}

// TestForkSilentContactDelaysNobody: a contact whose phone is gone (a UDP
// port nothing answers on) does not hold up the call the other contact
// answers. It sent nothing, so it cannot be cancelled (RFC 3261 9.1): its
// branch ends on its own no-answer timer, in case a late first response
// still comes and must be cancelled, and gets no CANCEL.
func TestForkSilentContactDelaysNobody(t *testing.T) {
	cfg := trustedConfig()
	cfg.BranchTimeout = 3 * time.Second
	store := location.NewMemoryStore(nil)
	p := startProxy(t, cfg, WithLocationStore(store))
	phone := newForkPhone(t, "phone")
	phone.registerQ(t, p, "")
	silent := newUDPEnd(t)
	addr := "127.0.0.1:" + strconv.Itoa(silent.port)
	now := time.Now()
	if _, err := store.Update(context.Background(), "bob@localhost", func(live []location.Binding) ([]location.Binding, error) {
		// Newest: it would be tried first, were contacts tried in turn.
		return append(live, location.Binding{
			AOR: "bob@localhost", Contact: "sip:bob@" + addr, Received: addr, Transport: "UDP",
			CallID: "old-phone", CSeq: 1, Expires: now.Add(time.Hour), UpdatedAt: now.Add(time.Minute),
		}), nil
	}); err != nil {
		t.Fatal(err)
	}

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	start := time.Now()
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	if m := silent.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsInvite() }); m == nil {
		t.Fatal("the silent contact got no INVITE")
	}
	receive(t, "invite at phone", phone.invites)
	phone.answer <- sip.StatusOK
	if got := finalStatus(t, tx, done); got != sip.StatusOK {
		t.Fatalf("caller got %d, want 200", got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the call took %v to connect: it waited for the silent contact", took)
	}
	waitFor(t, "handlers idle", func() bool { return p.InFlight() == 0 })
	if took := time.Since(start); took > cfg.BranchTimeout+1500*time.Millisecond {
		t.Fatalf("the transaction took %v to end, want the silent branch's timeout (%v)", took, cfg.BranchTimeout)
	}
	if got := testutil.ToFloat64(p.m.forkedBranches.WithLabelValues(forkElsewhere)); got != 1 {
		t.Errorf("forked branches given up for the answer elsewhere: %v, want 1", got)
	}
	if m := silent.next(t, 300*time.Millisecond, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsCancel() }); m != nil {
		t.Fatal("the silent contact got a CANCEL without having answered anything (RFC 3261 9.1)")
	}
}

// TestForkQValueGroups: the contacts of the highest q ring first, at once;
// the q=0.5 one rings only once both have failed, and gets the call.
func TestForkQValueGroups(t *testing.T) {
	p := startProxy(t, trustedConfig())
	desk, mobile, voicemail := newForkPhone(t, "desk"), newForkPhone(t, "mobile"), newForkPhone(t, "voicemail")
	voicemail.registerQ(t, p, "0.5")
	desk.registerQ(t, p, "")
	mobile.registerQ(t, p, "1")

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteRinging(t, caller, p.Addr("udp"), invite, 2)
	receive(t, "invite at desk", desk.invites)
	receive(t, "invite at mobile", mobile.invites)
	nothing(t, "invite at voicemail while q=1 rings", voicemail.invites, 300*time.Millisecond)
	desk.answer <- sip.StatusBusyHere
	nothing(t, "invite at voicemail while one q=1 still rings", voicemail.invites, 300*time.Millisecond)
	mobile.answer <- sip.StatusTemporarilyUnavailable
	receive(t, "invite at voicemail", voicemail.invites)
	voicemail.answer <- sip.StatusOK
	if got := finalStatus(t, tx, done); got != sip.StatusOK {
		t.Fatalf("caller got %d, want voicemail's 200", got)
	}
	noPumpsLeft(t, p)
}

// TestForkCallerCancels: the caller's CANCEL cancels every ringing branch,
// passing on its Reason (RFC 3326), and the caller gets 487.
func TestForkCallerCancels(t *testing.T) {
	p := startProxy(t, trustedConfig())
	desk, mobile := newForkPhone(t, "desk"), newForkPhone(t, "mobile")
	desk.registerQ(t, p, "")
	mobile.registerQ(t, p, "")
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteRinging(t, caller, p.Addr("udp"), invite, 2)
	receive(t, "invite at desk", desk.invites)
	receive(t, "invite at mobile", mobile.invites)
	cancelReq := cancelFor(invite)
	const reason = "Q.850;cause=16;text=\"Normal call clearing\""
	cancelReq.AppendHeader(sip.NewHeader("Reason", reason))
	if res := caller.do(t, p.Addr("udp"), cancelReq); res.StatusCode != sip.StatusOK {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	if got := finalStatus(t, tx, done); got != sip.StatusRequestTerminated {
		t.Fatalf("caller got %d, want 487", got)
	}
	for _, ph := range []*forkPhone{desk, mobile} {
		if got := reasonOf(receive(t, "cancel at "+ph.name, ph.cancels)); got != reason {
			t.Errorf("%s's CANCEL has Reason %q, want the caller's", ph.name, got)
		}
	}
	noPumpsLeft(t, p)
	if got := testutil.ToFloat64(p.m.forkedBranches.WithLabelValues(forkCancelled)); got != 2 {
		t.Errorf("forked branches cancelled: %v, want 2", got)
	}
}

// fakeNode is a media node that takes every offer and answer, answering
// with SDP of its own.
type fakeNode struct {
	refusingControl
	offerSDP, answerSDP []byte
	mu                  sync.Mutex
	answers             [][]byte
	// deleted holds the causes of the sessions released.
	deleted []string
}

func (n *fakeNode) Offer(context.Context, *callgridv1.OfferRequest) (*callgridv1.OfferReply, error) {
	return &callgridv1.OfferReply{Status: callgridv1.Status_STATUS_OK, NodeId: "node-1", Sdp: n.offerSDP}, nil
}

func (n *fakeNode) Answer(_ context.Context, _ string, req *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error) {
	n.mu.Lock()
	n.answers = append(n.answers, req.GetSdp())
	n.mu.Unlock()
	return &callgridv1.AnswerReply{Status: callgridv1.Status_STATUS_OK, Sdp: n.answerSDP}, nil
}

func (n *fakeNode) Delete(_ context.Context, _ string, req *callgridv1.DeleteRequest) (*callgridv1.DeleteReply, error) {
	n.mu.Lock()
	n.deleted = append(n.deleted, req.GetCause())
	n.mu.Unlock()
	return &callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_OK}, nil
}

// TestForkAnchoredMedia: every fork of an anchored call is offered the
// node's SDP, the caller's 200 carries the node's answer, and a second
// fork's 2xx, which crossed its CANCEL, still goes upstream (RFC 3261 16.7
// step 5) but without SDP or the session in its Record-Route: the node
// took the first fork's answer.
func TestForkAnchoredMedia(t *testing.T) {
	node := &fakeNode{
		offerSDP:  []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n"),
		answerSDP: []byte("v=0\r\no=- 2 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 20002 RTP/AVP 0\r\n"),
	}
	p := startProxy(t, trustedConfig(), WithMedia(MediaOptions{Control: node}))
	store := p.loc
	phone := newForkPhone(t, "phone")
	phone.sdp = []byte("v=0\r\no=phone 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n")
	phone.registerQ(t, p, "")
	late := newUDPEnd(t)
	addr := "127.0.0.1:" + strconv.Itoa(late.port)
	now := time.Now()
	if _, err := store.Update(context.Background(), "bob@localhost", func(live []location.Binding) ([]location.Binding, error) {
		return append(live, location.Binding{
			AOR: "bob@localhost", Contact: "sip:bob@" + addr, Received: addr, Transport: "UDP",
			CallID: "raw-phone", CSeq: 1, Expires: now.Add(time.Hour), UpdatedAt: now,
		}), nil
	}); err != nil {
		t.Fatal(err)
	}

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	callerSDP := []byte("v=0\r\no=alice 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n")
	invite.SetBody(callerSDP)
	ct := sip.ContentTypeHeader("application/sdp")
	invite.AppendHeader(&ct)
	var mu sync.Mutex
	var other2xx []*sip.Response
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	tx.OnRetransmission(func(r *sip.Response) {
		mu.Lock()
		other2xx = append(other2xx, r)
		mu.Unlock()
	})

	atPhone := receive(t, "invite at phone", phone.invites)
	m := late.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsInvite() })
	if m == nil {
		t.Fatal("no INVITE at the second contact")
	}
	atLate := m.(*sip.Request)
	for name, req := range map[string]*sip.Request{"phone": atPhone, "second contact": atLate} {
		if !bytes.Equal(req.Body(), node.offerSDP) {
			t.Fatalf("the %s was offered %q, want the node's SDP", name, req.Body())
		}
	}
	ringing := sip.NewResponseFromRequest(atLate, sip.StatusRinging, "Ringing", nil)
	ringing.To().Params.Add("tag", "late1")
	late.send(t, p.Addr("udp"), []byte(ringing.String()))
	// Its 180 has reached the caller: the proxy may cancel it.
	for rang := false; !rang; {
		select {
		case r := <-tx.Responses():
			rang = r.StatusCode == sip.StatusRinging && toTag(r) == "late1"
		case <-done:
			t.Fatal("the second contact's 180 never reached the caller")
		}
	}

	phone.answer <- sip.StatusOK
	var res *sip.Response
	for res == nil {
		select {
		case r := <-tx.Responses():
			if r.StatusCode >= 200 {
				res = r
			}
		case <-done:
			t.Fatal("no final response")
		}
	}
	if res.StatusCode != sip.StatusOK || !bytes.Equal(res.Body(), node.answerSDP) {
		t.Fatalf("caller got %d with %q, want 200 with the node's SDP", res.StatusCode, res.Body())
	}
	if late.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsCancel() }) == nil {
		t.Fatal("no CANCEL at the second contact")
	}
	// Its 200 crossed the CANCEL.
	lateSDP := []byte("v=0\r\no=late 1 1 IN IP4 198.51.100.8\r\ns=-\r\nc=IN IP4 198.51.100.8\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\n")
	ok := sip.NewResponseFromRequest(atLate, sip.StatusOK, "OK", lateSDP)
	ok.To().Params.Add("tag", "late1")
	ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "127.0.0.1", Port: late.port}})
	ctype := sip.ContentTypeHeader("application/sdp")
	ok.AppendHeader(&ctype)
	late.send(t, p.Addr("udp"), []byte(ok.String()))
	waitFor(t, "the second fork's 2xx at the caller", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range other2xx {
			if toTag(r) == "late1" {
				return true
			}
		}
		return false
	})
	mu.Lock()
	for _, r := range other2xx {
		if toTag(r) != "late1" {
			continue
		}
		if len(r.Body()) != 0 {
			t.Errorf("the second fork's 2xx carries %q, want no SDP", r.Body())
		}
		for _, h := range r.GetHeaders("Record-Route") {
			if strings.Contains(h.Value(), paramSession+"=") {
				t.Errorf("the second fork's 2xx names the session in %s", h.Value())
			}
		}
	}
	mu.Unlock()
	node.mu.Lock()
	for _, a := range node.answers {
		if bytes.Equal(a, lateSDP) {
			t.Error("the node was given the second fork's answer")
		}
	}
	node.mu.Unlock()
	noPumpsLeft(t, p)
}

// TestRegisterQValue: the registrar keeps each contact's q, lists it back
// in its 200, and refuses a malformed one with 400 as Kamailio does.
func TestRegisterQValue(t *testing.T) {
	tests := []struct {
		name       string
		q          string
		wantStatus int
		wantQ      string // in the 200's Contact; "" for none
		wantMilli  int
	}{
		{name: "none", wantStatus: 200, wantMilli: 1000},
		{name: "half", q: "0.5", wantStatus: 200, wantQ: "0.5", wantMilli: 500},
		{name: "three decimals", q: "0.250", wantStatus: 200, wantQ: "0.25", wantMilli: 250},
		{name: "zero", q: "0", wantStatus: 200, wantQ: "0", wantMilli: 0},
		{name: "above one", q: "1.5", wantStatus: 400},
		{name: "not a number", q: "high", wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, trustedConfig())
			phone := newPeer(t, "phone")
			req := phone.registerReq("bob", 600)
			if tc.q != "" {
				req.Contact().Params.Add("q", tc.q)
			}
			res := phone.register(t, p.Addr("udp"), req, testPassword)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("register: %d, want %d", res.StatusCode, tc.wantStatus)
			}
			bindings, err := p.loc.Lookup(context.Background(), "bob@localhost")
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantStatus != 200 {
				if h := res.GetHeader("P-Registrar-Error"); h == nil || h.Value() != regErrInvalidQ {
					t.Errorf("P-Registrar-Error %v, want %q", h, regErrInvalidQ)
				}
				if len(bindings) != 0 {
					t.Errorf("refused register bound %d contacts", len(bindings))
				}
				return
			}
			ct := res.Contact()
			if ct == nil {
				t.Fatal("200 lists no contact")
			}
			if got, _ := ct.Params.Get("q"); got != tc.wantQ || ct.Params.Has("q") != (tc.wantQ != "") {
				t.Errorf("200 lists q %q, want %q", got, tc.wantQ)
			}
			if len(bindings) != 1 || bindings[0].Q.Milli() != tc.wantMilli || bindings[0].Q.IsSet() != (tc.q != "") {
				t.Fatalf("bindings %+v, want one with q %d thousandths", bindings, tc.wantMilli)
			}
		})
	}
}

// TestForkGroupLen: registered contacts ring in groups of equal q, the
// order resolveTargets put them in; any other target rings alone.
func TestForkGroupLen(t *testing.T) {
	contact := func(q int) target { return target{fork: true, q: q} }
	gateway := target{}
	tests := []struct {
		name    string
		targets []target
		want    []int
	}{
		{name: "one contact", targets: []target{contact(1000)}, want: []int{1}},
		{name: "equal q", targets: []target{contact(1000), contact(1000), contact(1000)}, want: []int{3}},
		{name: "q groups", targets: []target{contact(1000), contact(1000), contact(500), contact(100), contact(100)}, want: []int{2, 1, 2}},
		{name: "gateways one by one", targets: []target{gateway, gateway}, want: []int{1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for rest := tc.targets; len(rest) > 0; {
				n := forkGroupLen(rest)
				got = append(got, n)
				rest = rest[n:]
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("groups %v, want %v", got, tc.want)
			}
		})
	}
}
