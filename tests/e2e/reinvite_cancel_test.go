package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// crossingPeer is a UDP SIP peer that answers a call at once and rings on a
// re-INVITE, whose 200 then crosses the caller's CANCEL (it left before the
// CANCEL arrived).
type crossingPeer struct {
	conn    *net.UDPConn
	rtpPort int
	invites chan *sip.Request
	byes    chan *sip.Request
}

func newCrossingPeer(t *testing.T, rtpPort int) *crossingPeer {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &crossingPeer{conn: conn, rtpPort: rtpPort, invites: make(chan *sip.Request, 8), byes: make(chan *sip.Request, 8)}
	done := make(chan struct{})
	go func() { defer close(done); p.serve() }()
	t.Cleanup(func() { _ = conn.Close(); <-done })
	return p
}

func (p *crossingPeer) serve() {
	var pending *sip.Request
	port := p.conn.LocalAddr().(*net.UDPAddr).Port
	respond := func(req *sip.Request, code int, body []byte, to *net.UDPAddr) {
		res := sip.NewResponseFromRequest(req, code, "X", body)
		if !res.To().Params.Has("tag") {
			res.To().Params.Add("tag", "gw1")
		}
		if body != nil {
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		}
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "gw", Host: "127.0.0.1", Port: port}})
		_, _ = p.conn.WriteToUDP([]byte(res.String()), to)
	}
	readRequests(p.conn, func(req *sip.Request, from *net.UDPAddr) {
		sdp := sdpFor(p.rtpPort, pcmuCodec(), 0, 101, "sendrecv")
		switch req.Method {
		case sip.INVITE:
			sendOrDrop(p.invites, req)
			if !req.To().Params.Has("tag") {
				respond(req, 200, sdp, from)
				return
			}
			pending = req
			respond(req, 180, nil, from)
		case sip.CANCEL:
			respond(req, 200, nil, from)
			if pending != nil {
				respond(pending, 200, sdp, from) // sent before the CANCEL came
				pending = nil
			}
		case sip.BYE:
			respond(req, 200, nil, from)
			sendOrDrop(p.byes, req)
		}
	})
}

// TestCancelledReinviteKeepsTheCall: the caller CANCELs a ringing
// re-INVITE and the callee's 200 crosses the CANCEL. A CANCEL concerns its
// request only (RFC 3261 9.1): the proxy acknowledges that 200 but does not
// hang up the callee of a call the caller is still on.
func TestCancelledReinviteKeepsTheCall(t *testing.T) {
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	gwRTP := newRTPEndpoint(t, pcmuCodec(), calleeHz)
	peer := newCrossingPeer(t, gwRTP.port())
	extra := fmt.Sprintf("  gateway_groups:\n    - name: gw\n      gateways:\n        - {name: gw, addr: %q}\n"+
		"  dialplan:\n    - {name: gw, prefix: \"666\", group: gw}\n", peer.conn.LocalAddr().String())
	s := startStack(t, proxyOpts{extra: extra}, mediaOpts{})
	out, err := caller.dial(withTimeout(t, 10*time.Second), s.proxy.sipAddr, "6660001")
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	receiveWithin(t, "invite at the gateway", peer.invites, time.Second)

	re := sip.NewRequest(sip.INVITE, out.InviteResponse.Contact().Address)
	re.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	re.SetBody(caller.localSDP("sendonly"))
	tx, err := out.TransactionRequest(withTimeout(t, 10*time.Second), re)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	for r := range tx.Responses() {
		if r.StatusCode == sip.StatusRinging {
			break
		}
	}
	cancel := sip.NewRequest(sip.CANCEL, re.Recipient)
	cancel.AppendHeader(sip.HeaderClone(re.Via()))
	for _, h := range re.GetHeaders("Route") {
		cancel.AppendHeader(sip.HeaderClone(h))
	}
	cancel.AppendHeader(sip.HeaderClone(re.From()))
	cancel.AppendHeader(sip.HeaderClone(re.To()))
	cancel.AppendHeader(sip.HeaderClone(re.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: re.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	cancel.AppendHeader(&mf)
	cancel.SetDestination(re.Destination())
	if _, err := caller.cli.Do(withTimeout(t, 5*time.Second), cancel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tx.Responses():
	case <-time.After(3 * time.Second):
	}
	select {
	case bye := <-peer.byes:
		t.Fatalf("the proxy hung up the callee (%s) of a call the caller is still on", bye.CSeq().Value())
	case <-time.After(time.Second):
	}
	if got := s.node.gauge(t, "callgrid_media_sessions_active"); got != 1 {
		t.Fatalf("%v media sessions, want the call's", got)
	}
}
