package sipproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// versionedNode is a media node's in-dialog negotiation as the engine does
// it, for one bridged session: its SDP for each leg keeps its origin
// version while the content stays the same, and a repeat of the same
// offer or answer builds the same content; an offer stays pending until
// rolled back or offered anew, and a rollback without one changes nothing
// and returns the leg's SDP in force. It refuses answers holding refuse.
type versionedNode struct {
	refusingControl
	refuse      []byte
	unreachable atomic.Bool
	updates     atomic.Int32

	mu      sync.Mutex
	version [3]uint64
	last    [3]string
	inForce [3][]byte
	offered [3][]byte
	pending [3][]byte // the offering leg's SDP in force before its offer
	hasPend [3]bool
}

func newVersionedNode(refuse string) *versionedNode {
	n := &versionedNode{refuse: []byte(refuse)}
	for _, l := range []callgridv1.Leg{callgridv1.Leg_LEG_A, callgridv1.Leg_LEG_B} {
		n.inForce[l] = n.build(l, "call")
	}
	return n
}

// build is the node's SDP for leg l with content derived from what.
func (n *versionedNode) build(l callgridv1.Leg, what string) []byte {
	if n.last[l] != "" && n.last[l] != what {
		n.version[l]++
	}
	n.last[l] = what
	return fmt.Appendf(nil, "v=0\r\no=- 4%d %d IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 2%d000 RTP/AVP 0\r\na=x-content:%s\r\n",
		l, n.version[l], l, what)
}

func sdpDigest(sdp []byte) string {
	sum := sha256.Sum256(sdp)
	return hex.EncodeToString(sum[:6])
}

func (n *versionedNode) Update(_ context.Context, _ string, req *callgridv1.UpdateRequest) (*callgridv1.UpdateReply, error) {
	n.updates.Add(1)
	if n.unreachable.Load() {
		return nil, bus.ErrTimeout
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	l, other := req.GetLeg(), otherLeg(req.GetLeg())
	var out []byte
	switch {
	case req.GetRollback():
		if n.hasPend[l] {
			n.inForce[l], n.hasPend[l] = n.pending[l], false
		}
		out = n.inForce[l]
	case req.GetAnswer():
		if bytes.Contains(req.GetSdp(), n.refuse) {
			return nil, &bus.StatusError{Op: "update", NodeID: "n1", Status: callgridv1.Status_STATUS_UNSUPPORTED_CODEC}
		}
		out = n.build(other, "answer-"+sdpDigest(req.GetSdp()))
		n.inForce[l], n.inForce[other] = n.offered[l], out
	default:
		n.pending[l], n.hasPend[l] = n.inForce[l], true
		out = n.build(other, "offer-"+sdpDigest(req.GetSdp()))
		n.offered[other] = out
	}
	return &callgridv1.UpdateReply{Status: callgridv1.Status_STATUS_OK, Sdp: out}, nil
}

// udpEnd is a phone on a bare loopback socket: the test writes its
// messages and reads what reaches it, with nothing answered for it.
type udpEnd struct {
	conn *net.UDPConn
	port int
}

func newUDPEnd(t *testing.T) *udpEnd {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &udpEnd{conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port}
}

func (e *udpEnd) send(t *testing.T, to string, msg []byte) {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.conn.WriteToUDP(msg, addr); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message matching want within wait, or nil.
func (e *udpEnd) next(t *testing.T, wait time.Duration, want func(sip.Message) bool) sip.Message {
	t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65535)
	for {
		_ = e.conn.SetReadDeadline(deadline)
		n, _, err := e.conn.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		msg, err := sip.ParseMessage(bytes.Clone(buf[:n]))
		if err == nil && want(msg) {
			return msg
		}
	}
}

func isOK(m sip.Message) bool {
	res, ok := m.(*sip.Response)
	return ok && res.StatusCode == sip.StatusOK
}

func isInvite(m sip.Message) bool {
	req, ok := m.(*sip.Request)
	return ok && req.IsInvite()
}

// TestReinvite2xxAfterTransactionKeepsTheNodesSDP: the 2xx to an in-dialog
// INVITE of an anchored call, repeated by its sender after the proxy's
// client transaction has ended (no ACK came), comes back with no
// Record-Route to name the session. It was relayed with the phone's own
// SDP, sending the other party's media around the node. Now our Via names
// the session and leg, and the repeat carries what the first 2xx did, down
// to the origin version; one the node cannot be asked about is dropped.
func TestReinvite2xxAfterTransactionKeepsTheNodesSDP(t *testing.T) {
	const (
		phoneAddr   = "198.51.100.7"
		callerTag   = "caller-tag"
		calleeTag   = "callee-tag"
		unsupported = "RTP/AVP 99"
	)
	phoneSDP := func(what string, codec string) []byte {
		return []byte("v=0\r\no=phone 1 " + what + " IN IP4 " + phoneAddr + "\r\ns=-\r\nc=IN IP4 " + phoneAddr + "\r\nt=0 0\r\nm=audio 40000 " + codec + "\r\n")
	}
	tests := []struct {
		name string
		// fromCallee: the callee sends the re-INVITE, the caller answers.
		fromCallee bool
		offer      []byte // the re-INVITE's SDP; nil for an offerless one
		reply      []byte // the 2xx's SDP
		// unreachable: the node cannot be asked once the first 2xx is through.
		unreachable bool
	}{
		{name: "caller offers", offer: phoneSDP("2", "RTP/AVP 0"), reply: phoneSDP("3", "RTP/AVP 0")},
		{name: "callee offers", fromCallee: true, offer: phoneSDP("2", "RTP/AVP 0"), reply: phoneSDP("3", "RTP/AVP 0")},
		{name: "offerless, the 2xx offers", reply: phoneSDP("3", "RTP/AVP 0")},
		{name: "callee offers offerless", fromCallee: true, reply: phoneSDP("3", "RTP/AVP 0")},
		{name: "refused answer rolled back", offer: phoneSDP("2", "RTP/AVP 0"), reply: phoneSDP("3", unsupported)},
		{name: "node unreachable", offer: phoneSDP("2", "RTP/AVP 0"), reply: phoneSDP("3", "RTP/AVP 0"), unreachable: true},
	}
	// Every case gets its first 2xx through, then all wait out the
	// transactions together.
	type answered struct {
		node     *versionedNode
		p        *runningProxy
		sender   *udpEnd
		answerer *udpEnd
		ok       []byte // the answerer's 2xx, as sent
		first    []byte // the body the proxy gave it
	}
	calls := make([]answered, len(tests))
	for i, tc := range tests {
		node := newVersionedNode(unsupported)
		p := startProxy(t, testConfig(), WithMedia(MediaOptions{Control: node}))
		proxyAddr := p.Addr("udp")
		proxyHost, proxyPort, _ := net.SplitHostPort(proxyAddr)
		sender, answerer := newUDPEnd(t), newUDPEnd(t)
		fromTag, toTag := callerTag, calleeTag
		if tc.fromCallee {
			fromTag, toTag = calleeTag, callerTag
		}
		route := "<sip:" + proxyHost + ":" + proxyPort + ";lr;cg-node=n1;cg-session=s1;cg-atag=" + tagHash(callerTag) + ">"
		reinvite := "INVITE sip:peer@127.0.0.1:" + strconv.Itoa(answerer.port) + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(sender.port) + ";branch=z9hG4bK-reinvite-" + strconv.Itoa(sender.port) + ";rport\r\n" +
			"Route: " + route + "\r\n" +
			"Max-Forwards: 70\r\n" +
			"From: <sip:sender@localhost>;tag=" + fromTag + "\r\n" +
			"To: <sip:peer@localhost>;tag=" + toTag + "\r\n" +
			"Call-ID: stray-reinvite-" + strconv.Itoa(sender.port) + "@test\r\n" +
			"CSeq: 2 INVITE\r\n" +
			"Contact: <sip:sender@127.0.0.1:" + strconv.Itoa(sender.port) + ">\r\n"
		if tc.offer != nil {
			reinvite += "Content-Type: application/sdp\r\n"
		}
		reinvite += "Content-Length: " + strconv.Itoa(len(tc.offer)) + "\r\n\r\n" + string(tc.offer)
		sender.send(t, proxyAddr, []byte(reinvite))

		msg := answerer.next(t, 5*time.Second, isInvite)
		if msg == nil {
			t.Fatalf("%s: the re-INVITE was not forwarded", tc.name)
		}
		fwd := msg.(*sip.Request)
		ok := sip.NewResponseFromRequest(fwd, sip.StatusOK, "OK", tc.reply)
		ok.To().Params.Add("tag", toTag)
		ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "peer", Host: "127.0.0.1", Port: answerer.port}})
		ct := sip.ContentTypeHeader(sdpContentType)
		ok.AppendHeader(&ct)
		okBytes := []byte(ok.String())
		answerer.send(t, proxyAddr, okBytes)

		msg = sender.next(t, 5*time.Second, isOK)
		if msg == nil {
			t.Fatalf("%s: the first 2xx was not relayed", tc.name)
		}
		first := msg.(*sip.Response).Body()
		if bytes.Contains(first, []byte(phoneAddr)) {
			t.Fatalf("%s: the first 2xx carries the phone's own SDP:\n%s", tc.name, first)
		}
		calls[i] = answered{node: node, p: p, sender: sender, answerer: answerer, ok: okBytes, first: first}
	}

	// No sender ACKs: each peer repeats its 2xx after the proxy's client
	// transaction (Timer M) and server transaction (Timer L) are both
	// gone, and nothing else then answers the sender.
	time.Sleep(Config{}.WithDefaults().TransactionLinger + time.Second)

	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := calls[i]
			for c.sender.next(t, 10*time.Millisecond, func(sip.Message) bool { return true }) != nil {
			}
			c.node.unreachable.Store(tc.unreachable)
			dropped := testutil.ToFloat64(c.p.m.dropped.WithLabelValues("stray_response"))
			updates := c.node.updates.Load()
			c.answerer.send(t, c.p.Addr("udp"), c.ok)

			msg := c.sender.next(t, 2*time.Second, isOK)
			if tc.unreachable {
				if msg != nil {
					t.Fatalf("a 2xx the node could not anchor was relayed:\n%s", msg.(*sip.Response).Body())
				}
				if got := testutil.ToFloat64(c.p.m.dropped.WithLabelValues("stray_response")); got != dropped+1 {
					t.Errorf("stray responses dropped %v, want %v", got, dropped+1)
				}
				return
			}
			if msg == nil {
				t.Fatal("the repeated 2xx was not relayed")
			}
			if got := msg.(*sip.Response).Body(); !bytes.Equal(got, c.first) {
				t.Errorf("repeated 2xx carries\n%s\nthe first carried\n%s", got, c.first)
			}
			if c.node.updates.Load() == updates {
				t.Error("the repeated 2xx did not go through the stray path: the node was not asked")
			}
		})
	}
}

// TestInDialogOfferRoundTripsThroughVia: what markVia puts in our Via is
// read back as it was from the Via of a response, and a Via naming a
// session but no leg is marked yet unusable, so its 2xx is dropped rather
// than relayed as it came.
func TestInDialogOfferRoundTripsThroughVia(t *testing.T) {
	cases := []struct {
		name string
		o    inDialogOffer
	}{
		{name: "caller offers", o: inDialogOffer{sess: mediaSession{node: "media-1", session: "abc123"}, reqLeg: callgridv1.Leg_LEG_A, offered: true}},
		{name: "callee without offer", o: inDialogOffer{sess: mediaSession{node: "media-1", session: "abc123"}, reqLeg: callgridv1.Leg_LEG_B}},
		{name: "late-offer callee's side, no node", o: inDialogOffer{sess: mediaSession{session: "abc123"}, reqLeg: callgridv1.Leg_LEG_A, offered: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			via := (&Server{}).ourVia("UDP", "z9hG4bKcg1")
			tc.o.markVia(via)
			res := sip.NewResponse(sip.StatusOK, "OK")
			res.AppendHeader(via)
			msg, err := sip.ParseMessage([]byte(res.String()))
			if err != nil {
				t.Fatal(err)
			}
			got, marked, ok := inDialogOfferFrom(msg.(*sip.Response).Via().Params)
			if !marked || !ok || got != tc.o {
				t.Fatalf("got %+v (marked %v, ok %v), want %+v", got, marked, ok, tc.o)
			}
		})
	}
	if _, marked, ok := inDialogOfferFrom(sip.HeaderParams{{K: "branch", V: "z9hG4bKcg1"}}); marked || ok {
		t.Error("a Via without a session is marked")
	}
	if _, marked, ok := inDialogOfferFrom(sip.HeaderParams{{K: paramSession, V: "abc123"}}); !marked || ok {
		t.Errorf("a Via with a session and no leg: marked %v, ok %v; want marked, not ok", marked, ok)
	}
}
