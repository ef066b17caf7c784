package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ringingPeer is a UDP SIP peer that answers every INVITE with 180 and then
// ignores everything, CANCEL included: a branch whose final response never
// comes.
type ringingPeer struct {
	conn    *net.UDPConn
	invites chan *sip.Request
	cancels chan *sip.Request
}

func newRingingPeer(t *testing.T) *ringingPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &ringingPeer{conn: conn, invites: make(chan *sip.Request, 16), cancels: make(chan *sip.Request, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.serve()
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return p
}

func (p *ringingPeer) addr() string { return p.conn.LocalAddr().String() }

func (p *ringingPeer) serve() {
	// One tag for the whole peer: a retransmitted INVITE gets the same 180.
	tag := sip.GenerateTagN(10)
	readRequests(p.conn, func(req *sip.Request, from *net.UDPAddr) {
		switch req.Method {
		case sip.INVITE:
			ringing := sip.NewResponseFromRequest(req, sip.StatusRinging, "Ringing", nil)
			ringing.To().Params.Add("tag", tag)
			_, _ = p.conn.WriteToUDP([]byte(ringing.String()), from)
			sendOrDrop(p.invites, req)
		case sip.CANCEL:
			sendOrDrop(p.cancels, req)
		}
	})
}

// readRequests reads the SIP requests that reach conn, until it is closed,
// and hands each to handle: the loop of the raw peers these tests play.
func readRequests(conn *net.UDPConn, handle func(req *sip.Request, from *net.UDPAddr)) {
	buf := make([]byte, 65535)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		// The parsed message may keep slices of its input: give it its own.
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		if req, ok := msg.(*sip.Request); ok {
			handle(req, from)
		}
	}
}

// checkCancelMatches asserts cancel targets invite as RFC 3261 9.1 has it:
// same Request-URI, Call-ID, From, To and CSeq number, and a single Via
// equal to the INVITE's top one.
func checkCancelMatches(t *testing.T, invite, cancel *sip.Request) {
	t.Helper()
	if cancel.Method != sip.CANCEL {
		t.Fatalf("got %s, want CANCEL", cancel.Method)
	}
	same := []struct{ what, invite, cancel string }{
		{"request-uri", invite.Recipient.String(), cancel.Recipient.String()},
		{"call-id", invite.CallID().Value(), cancel.CallID().Value()},
		{"from", invite.From().Value(), cancel.From().Value()},
		{"to", invite.To().Value(), cancel.To().Value()},
		{"top via", invite.Via().Value(), cancel.Via().Value()},
		{"cseq number", fmt.Sprint(invite.CSeq().SeqNo), fmt.Sprint(cancel.CSeq().SeqNo)},
	}
	for _, s := range same {
		if s.invite != s.cancel {
			t.Errorf("cancel %s %q differs from the invite's %q", s.what, s.cancel, s.invite)
		}
	}
	if vias := cancel.GetHeaders("Via"); len(vias) != 1 {
		t.Errorf("cancel carries %d vias, want 1", len(vias))
	}
}

// TestTimerCCancelsRingingBranch: a callee that rings and never answers is
// cancelled by the proxy when Timer C (sip.invite_timeout) fires, and the
// caller gets 408 (RFC 3261 16.8), whether the branch answers the CANCEL
// with 487 (a phone) or not at all (a peer the proxy stops waiting for
// after sip.cancel_wait). The call's media session is released with cause
// 408.
func TestTimerCCancelsRingingBranch(t *testing.T) {
	const (
		inviteTimeout = time.Second
		// cancelWait is sip.cancel_wait of the test proxies.
		cancelWait = 2 * time.Second
	)
	peer := newRingingPeer(t)
	extra := fmt.Sprintf("  gateway_groups:\n    - name: ringing\n      gateways:\n        - {name: ringing, addr: %q}\n"+
		"  dialplan:\n    - {name: ringing, prefix: \"888\", group: ringing}\n", peer.addr())
	s := startStack(t, proxyOpts{inviteTimeout: inviteTimeout, extra: extra}, mediaOpts{})
	ended := s.nats.callEnded(t)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	callee.behaviour.Store(&calleeBehaviour{neverAnswer: true})
	callee.register(t, s.proxy.sipAddr)
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)

	cases := []struct {
		name    string
		to      string
		invites <-chan *sip.Request
		cancels <-chan *sip.Request
		// within bounds the wait for the caller's final response.
		within time.Duration
	}{
		{name: "phone answers the cancel", to: "bob", invites: callee.invites, cancels: callee.cancels, within: inviteTimeout + cancelWait},
		{name: "peer ignores the cancel", to: "8880001", invites: peer.invites, cancels: peer.cancels, within: inviteTimeout + cancelWait + 2*time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			start := time.Now()
			sess, err := caller.dial(ctx, s.proxy.sipAddr, tc.to)
			took := time.Since(start)
			if err == nil {
				t.Fatal("call was answered")
			}
			if got := finalStatus(err); got != sip.StatusRequestTimeout {
				t.Fatalf("caller got %v, want 408", err)
			}
			if took < inviteTimeout || took > tc.within {
				t.Errorf("408 came after %v, want between %v (timer c) and %v", took.Round(time.Millisecond), inviteTimeout, tc.within)
			}
			invite := receiveWithin(t, "invite at the callee", tc.invites, time.Second)
			checkCancelMatches(t, invite, receiveWithin(t, "cancel at the callee", tc.cancels, time.Second))
			if ev := waitCallEnded(t, ended, sess.InviteRequest.CallID().Value()); ev.GetCause() != "408" {
				t.Errorf("call ended with cause %q, want 408", ev.GetCause())
			}
			s.node.waitIdle(t)
		})
	}
}
