package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// forkingPeer is a gateway that forks downstream: every INVITE is answered
// 200 by two UAs (two To tags, two SDPs), as a forking proxy behind it
// relays both 2xx (RFC 3261 16.7 step 5).
type forkingPeer struct {
	conn         *net.UDPConn
	portX, portY int
	byes         chan *sip.Request
	invites      chan *sip.Request
}

func newForkingPeer(t *testing.T, portX, portY int) *forkingPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &forkingPeer{conn: conn, portX: portX, portY: portY, byes: make(chan *sip.Request, 8), invites: make(chan *sip.Request, 8)}
	done := make(chan struct{})
	go func() { defer close(done); p.serve() }()
	t.Cleanup(func() { _ = conn.Close(); <-done })
	return p
}

func (p *forkingPeer) addr() string { return p.conn.LocalAddr().String() }

func (p *forkingPeer) serve() {
	answered := map[string]bool{}
	readRequests(p.conn, func(req *sip.Request, from *net.UDPAddr) {
		switch req.Method {
		case sip.INVITE:
			if answered[req.CallID().Value()] {
				return
			}
			answered[req.CallID().Value()] = true
			sendOrDrop(p.invites, req)
			pcmu := pcmuCodec()
			for i, fork := range []struct {
				tag  string
				port int
			}{{"forkX", p.portX}, {"forkY", p.portY}} {
				ok := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", sdpFor(fork.port, pcmu, 0, 101, "sendrecv"))
				ok.To().Params.Add("tag", fork.tag)
				ok.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: fork.tag, Host: "127.0.0.1", Port: p.conn.LocalAddr().(*net.UDPAddr).Port}})
				if i == 1 {
					time.Sleep(100 * time.Millisecond)
				}
				_, _ = p.conn.WriteToUDP([]byte(ok.String()), from)
			}
		case sip.BYE:
			res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
			_, _ = p.conn.WriteToUDP([]byte(res.String()), from)
			sendOrDrop(p.byes, req)
		}
	})
}

// dialogRequest builds an in-dialog request of the caller for the dialog
// res set up (RFC 3261 12.2.1.1: route set from Record-Route, reversed).
func dialogRequest(method sip.RequestMethod, invite *sip.Request, res *sip.Response, seq uint32, proxy string) *sip.Request {
	r := sip.NewRequest(method, *res.Contact().Address.Clone())
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		r.AppendHeader(sip.NewHeader("Route", rrs[i].Value()))
	}
	r.AppendHeader(sip.HeaderClone(invite.From()))
	r.AppendHeader(sip.HeaderClone(res.To()))
	r.AppendHeader(sip.HeaderClone(invite.CallID()))
	r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	r.AppendHeader(&mf)
	r.SetDestination(proxy)
	return r
}

// TestSecondForkedAnswerLeavesTheCallAlone: the gateway forks and both
// forks answer. The caller keeps the first dialog and, as RFC 3261
// 13.2.2.4 has it, ACKs the second 2xx and ends that dialog with a BYE.
// The second 2xx reaches the caller without SDP or media session, and the
// call it kept keeps its session and audio.
func TestSecondForkedAnswerLeavesTheCallAlone(t *testing.T) {
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	forkX := newRTPEndpoint(t, pcmuCodec(), calleeHz)
	forkY := newRTPEndpoint(t, pcmuCodec(), 700)
	peer := newForkingPeer(t, forkX.port(), forkY.port())
	extra := fmt.Sprintf("  trusted_networks: [127.0.0.1/32]\n  gateway_groups:\n    - name: forking\n      gateways:\n        - {name: forking, addr: %q}\n"+
		"  dialplan:\n    - {name: forking, prefix: \"777\", group: forking}\n", peer.addr())
	s := startStack(t, proxyOpts{extra: extra}, mediaOpts{})
	ended := s.nats.callEnded(t)

	invite := caller.inviteRequest(s.proxy.sipAddr, "7770001", caller.localSDP("sendrecv"))
	tx, err := caller.cli.TransactionRequest(withTimeout(t, 10*time.Second), invite)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	second := make(chan *sip.Response, 4)
	tx.OnRetransmission(func(r *sip.Response) { sendOrDrop(second, r) })
	var first *sip.Response
	for first == nil {
		select {
		case r := <-tx.Responses():
			if r.IsSuccess() {
				first = r
			} else if r.StatusCode >= 300 {
				t.Fatalf("call failed: %s", r.StartLine())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no 2xx")
		}
	}
	if err := caller.useAnswer(first.Body()); err != nil {
		t.Fatal(err)
	}
	ackX := dialogRequest(sip.ACK, invite, first, invite.CSeq().SeqNo, s.proxy.sipAddr)
	if err := caller.cli.WriteRequest(ackX); err != nil {
		t.Fatal(err)
	}
	atGateway := receiveWithin(t, "invite at the gateway", peer.invites, time.Second)
	d, _ := parseSDP(atGateway.Body())
	forkX.connect(d.addr, 0, 101)
	forkX.waitTone(t, "fork X", callerHz)
	caller.rtp.waitTone(t, "caller", calleeHz)

	y := receiveWithin(t, "second fork's 2xx", second, 3*time.Second)
	if y.To().Params.GetOr("tag", "") == first.To().Params.GetOr("tag", "") {
		t.Fatal("second 2xx has the first one's tag")
	}
	if len(y.Body()) != 0 {
		t.Fatalf("the second fork's 2xx carries SDP no node anchors:\n%s", y.Body())
	}
	// RFC 3261 13.2.2.4: ACK it, then BYE the dialog not wanted.
	if err := caller.cli.WriteRequest(dialogRequest(sip.ACK, invite, y, invite.CSeq().SeqNo, s.proxy.sipAddr)); err != nil {
		t.Fatal(err)
	}
	if _, err := caller.cli.Do(withTimeout(t, 5*time.Second), dialogRequest(sip.BYE, invite, y, invite.CSeq().SeqNo+1, s.proxy.sipAddr)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case ev := <-ended:
		t.Fatalf("the kept call's media session ended (cause %q) when the unwanted fork was hung up", ev.GetCause())
	default:
	}
	if got := s.node.gauge(t, "callgrid_media_sessions_active"); got != 1 {
		t.Fatalf("node sessions %v, want 1 (the call on fork X)", got)
	}
	forkX.reset()
	caller.rtp.reset()
	forkX.waitTone(t, "fork X after the other fork's BYE", callerHz)
	caller.rtp.waitTone(t, "caller after the other fork's BYE", calleeHz)
}
