package sipproxy

import (
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// callee answers INVITEs like a phone and records what reached it.
type callee struct {
	*peer
	invites chan *sip.Request
	acks    chan *sip.Request
	byes    chan *sip.Request
	cancels chan *sip.Request
}

// newCallee answers INVITE with 180 and then, after answerAfter, 200 (or
// nothing when answerAfter is negative: it keeps ringing).
func newCallee(t *testing.T, answerAfter time.Duration) *callee {
	c := &callee{
		invites: make(chan *sip.Request, 10),
		acks:    make(chan *sip.Request, 10),
		byes:    make(chan *sip.Request, 10),
		cancels: make(chan *sip.Request, 10),
	}
	c.peer = newPeerWith(t, "callee", func(srv *sipgo.Server, port int) { c.handle(srv, port, answerAfter) })
	return c
}

func (c *callee) handle(srv *sipgo.Server, port int, answerAfter time.Duration) {
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		c.invites <- req
		ringing := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
		_ = tx.Respond(ringing)
		toTag, _ := ringing.To().Params.Get("tag")
		cancelled := make(chan struct{})
		tx.OnCancel(func(r *sip.Request) {
			c.cancels <- r
			close(cancelled)
		})
		if answerAfter < 0 {
			select {
			case <-cancelled:
			case <-tx.Done():
			}
			return
		}
		select {
		case <-cancelled:
			return
		case <-time.After(answerAfter):
		}
		ok := sip.NewResponseFromRequest(req, 200, "OK", nil)
		ok.To().Params.Add("tag", toTag)
		ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "callee", Host: "127.0.0.1", Port: port}})
		_ = tx.Respond(ok)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { c.acks <- req })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		c.byes <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
}

func receive(t *testing.T, what string, ch <-chan *sip.Request) *sip.Request {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s not received", what)
		return nil
	}
}

// inDialog builds ACK or BYE from the caller side of a dialog set up by res.
func inDialog(method sip.RequestMethod, invite *sip.Request, res *sip.Response, seq uint32) *sip.Request {
	req := sip.NewRequest(method, res.Contact().Address)
	rrs := res.GetHeaders("Record-Route")
	// The caller's route set is the Record-Route list reversed (RFC 3261 12.1.2).
	for i := len(rrs) - 1; i >= 0; i-- {
		rr := rrs[i].(*sip.RecordRouteHeader)
		req.AppendHeader(&sip.RouteHeader{Address: rr.Address})
	}
	req.AppendHeader(sip.HeaderClone(invite.From()))
	req.AppendHeader(sip.HeaderClone(res.To()))
	req.AppendHeader(sip.HeaderClone(invite.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	return req
}

// routeDestination is where a UA sends an in-dialog request: the first Route.
func routeDestination(req *sip.Request) string {
	r := req.Route()
	return r.Address.HostPort()
}

func trustedConfig() Config {
	cfg := testConfig()
	cfg.TrustedNetworks = []string{"127.0.0.0/8"}
	cfg.Auth = authConfig("bob")
	return cfg
}

func TestCallToRegisteredUser(t *testing.T) {
	p := startProxy(t, trustedConfig())
	bob := newCallee(t, 20*time.Millisecond)
	if res := bob.register(t, p.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	res := caller.do(t, p.Addr("udp"), invite)
	if res.StatusCode != 200 {
		t.Fatalf("invite: %d", res.StatusCode)
	}
	got := receive(t, "invite at callee", bob.invites)
	if rr := got.RecordRoute(); rr == nil || !rr.Address.UriParams.Has("lr") {
		t.Fatalf("callee INVITE lacks Record-Route with lr: %v", got.RecordRoute())
	}
	if n := len(got.GetHeaders("Via")); n != 2 {
		t.Errorf("callee saw %d Vias, want 2 (caller and proxy)", n)
	}
	if n := len(res.GetHeaders("Via")); n != 1 {
		t.Errorf("caller's 200 has %d Vias, want 1: proxy Via must be stripped", n)
	}
	if res.RecordRoute() == nil {
		t.Fatalf("200 lacks Record-Route")
	}

	ack := inDialog(sip.ACK, invite, res, invite.CSeq().SeqNo)
	ack.SetDestination(routeDestination(ack))
	if err := caller.cli.WriteRequest(ack); err != nil {
		t.Fatalf("ack: %v", err)
	}
	gotAck := receive(t, "ack at callee", bob.acks)
	if gotAck.Route() != nil {
		t.Errorf("proxy did not pop its Route from the ACK")
	}

	bye := inDialog(sip.BYE, invite, res, invite.CSeq().SeqNo+1)
	bye.SetDestination(routeDestination(bye))
	if res := caller.do(t, routeDestination(bye), bye); res.StatusCode != 200 {
		t.Fatalf("bye: %d", res.StatusCode)
	}
	receive(t, "bye at callee", bob.byes)
	if got := testutil.ToFloat64(p.m.requests.WithLabelValues("INVITE")); got != 1 {
		t.Errorf("INVITE counter %v, want 1", got)
	}
}

func TestCancelBeforeAnswer(t *testing.T) {
	p := startProxy(t, trustedConfig())
	bob := newCallee(t, -1)
	if res := bob.register(t, p.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	// Ringing before cancelling, as a phone would.
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	cancelReq := cancelFor(invite)
	cancelReq.SetDestination(p.Addr("udp"))
	if res := caller.do(t, p.Addr("udp"), cancelReq); res.StatusCode != 200 {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	if final := finalStatus(t, tx, done); final != sip.StatusRequestTerminated {
		t.Fatalf("caller got %d, want 487", final)
	}
	receive(t, "cancel at callee", bob.cancels)
}

// RFC 3261 19.1.4: an escaped character in a user part is the character
// itself, so a call to sip:%62ob@localhost reaches the phone registered as
// bob, and one with a malformed escape reaches nobody rather than failing.
func TestEscapedUserIsTheSameUser(t *testing.T) {
	p := startProxy(t, trustedConfig())
	bob := newCallee(t, 20*time.Millisecond)
	if res := bob.register(t, p.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	caller := newPeer(t, "caller")
	if res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:%62ob@localhost", "alice")); res.StatusCode != 200 {
		t.Fatalf("invite to %%62ob: %d, want 200 from bob", res.StatusCode)
	}
	receive(t, "invite at bob", bob.invites)
	if res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:b%zzob@localhost", "alice")); res.StatusCode != 404 {
		t.Fatalf("invite to a malformed escape: %d, want 404", res.StatusCode)
	}
}
