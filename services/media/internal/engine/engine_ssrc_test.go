package engine

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// expectBye waits for a compound RTCP packet from the node that ends with a
// BYE for ssrc, as RFC 3550 §8.2 has a party leaving an SSRC it found taken.
func (ep *endpoint) expectBye(ssrc uint32) {
	ep.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		pkts, _, ok := ep.tryCompound(time.Until(deadline))
		if !ok {
			ep.t.Fatalf("no RTCP BYE for the old SSRC %#x", ssrc)
		}
		if bye, ok := pkts[len(pkts)-1].(*rtcp.Goodbye); ok && len(bye.Sources) == 1 && bye.Sources[0] == ssrc {
			return
		}
	}
}

// recvSSRC reads packets until one arrives that is not from SSRC old:
// what the node sends at its own pace (the tone) may still be in flight
// from before.
func (ep *endpoint) recvSSRC(old uint32) {
	ep.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if p, ok := ep.recv(time.Until(deadline)); ok && p.SSRC != old {
			return
		}
	}
	ep.t.Fatalf("the node still sends from SSRC %#x", old)
}

// When the endpoint of a leg turns out to send with the SSRC of the stream
// the node originates to it (echoed, tone, transcoded), the node goes on
// with a new random SSRC and says BYE for the old one (RFC 3550 §8.2).
func TestSSRCCollisionRenumbersTheNodesStream(t *testing.T) {
	t.Run("echo", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a := newEndpoint(t)
		answer, err := e.Offer(context.Background(), OfferParams{SessionID: "echo", SDP: a.sdp("0"), Service: ServiceEcho})
		if err != nil {
			t.Fatal(err)
		}
		node := nodeAddr(t, answer)
		echo := func(seq uint16, ssrc uint32) uint32 {
			t.Helper()
			a.send(node, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc}, pcmuPayload(1))
			p, ok := a.recv(2 * time.Second)
			if !ok {
				t.Fatalf("packet %d not echoed", seq)
			}
			return p.SSRC
		}
		ours := echo(1, 42)
		renewed := echo(2, ours)
		if renewed == ours {
			t.Fatalf("the caller now sends with SSRC %#x and the echo still comes from it", ours)
		}
		a.expectBye(ours)
		// The caller's packets coming back from the same address with the
		// new SSRC too are the node's own looped back: it is kept.
		if again := echo(3, renewed); again != renewed {
			t.Fatalf("a second collision from the same address moved the SSRC on to %#x: chasing a loop", again)
		}
	})
	t.Run("tone", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a := newEndpoint(t)
		answer, err := e.Offer(context.Background(), OfferParams{SessionID: "tone", SDP: a.sdp("0"), Service: ServiceTone})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := a.recv(2 * time.Second)
		if !ok {
			t.Fatal("no tone")
		}
		a.send(nodeAddr(t, answer), rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: p.SSRC}, pcmuPayload(1))
		a.recvSSRC(p.SSRC)
		a.expectBye(p.SSRC)
	})
	t.Run("transcoding bridge", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a, b := newEndpoint(t), newEndpoint(t)
		nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2"))
		opus, pcmu := encodeTone(t, codec.Opus, 48000, 2), encodeTone(t, codec.PCMU, 8000, 1)[0]
		b.send(nodeB, rtp.Header{PayloadType: 111, SequenceNumber: 1, Timestamp: 0, SSRC: 21}, opus[0])
		p, ok := a.recv(2 * time.Second)
		if !ok {
			t.Fatal("B's audio not transcoded to A")
		}
		ours := p.SSRC
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, Timestamp: 0, SSRC: ours}, pcmu)
		if _, ok := b.recv(2 * time.Second); !ok {
			t.Fatal("A's audio not transcoded to B")
		}
		b.send(nodeB, rtp.Header{PayloadType: 111, SequenceNumber: 2, Timestamp: 960, SSRC: 21}, opus[1])
		p, ok = a.recv(2 * time.Second)
		if !ok {
			t.Fatal("B's audio not transcoded to A")
		}
		if p.SSRC == ours {
			t.Fatalf("A sends with SSRC %#x and still receives B's audio from it", ours)
		}
		a.expectBye(ours)
	})
}

// A relay originates no SSRC: endpoints that both send with the same one
// have it forwarded as it is. Once the relay turns to transcoding, the
// stream it goes on with is its own, and must not keep the SSRC that the
// endpoint it goes to sends with.
func TestSSRCCollisionWhenARelayStartsTranscoding(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0 8"))
	const shared = 5
	pcmu, pcma := encodeTone(t, codec.PCMU, 8000, 1)[0], encodeTone(t, codec.PCMA, 8000, 1)[0]
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 1, Timestamp: 0, SSRC: shared}, pcmu)
	if p, ok := a.recv(2 * time.Second); !ok || p.SSRC != shared {
		t.Fatalf("B's PCMU relayed to A: ok %v from SSRC %#x, want %#x", ok, p.SSRC, shared)
	}
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, Timestamp: 0, SSRC: shared}, pcmu)
	if p, ok := b.recv(2 * time.Second); !ok || p.SSRC != shared {
		t.Fatalf("A's PCMU relayed to B: ok %v from SSRC %#x, want %#x", ok, p.SSRC, shared)
	}
	// B switches to PCMA, which A does not have: B's audio is transcoded.
	b.send(nodeB, rtp.Header{PayloadType: 8, SequenceNumber: 2, Timestamp: 160, SSRC: shared}, pcma)
	p, ok := a.recv(2 * time.Second)
	if !ok || p.PayloadType != 0 {
		t.Fatalf("B's PCMA transcoded to A: ok %v payload type %d", ok, p.PayloadType)
	}
	if p.SSRC == shared {
		t.Fatalf("the transcoded stream to A keeps SSRC %#x, A's own", shared)
	}
	a.expectBye(shared)
}

// ntpToTime is an SR's NTP timestamp as a time on this machine's clock,
// which is the node's.
func ntpToTime(ntp uint64) time.Time {
	return time.Unix(int64(ntp>>32)-2208988800, int64((ntp&0xffffffff)*uint64(time.Second)>>32))
}

// A sender report counts the packets and octets sent under its own SSRC
// (RFC 3550 §6.4.1: the counts start over when the sender changes SSRC):
// once a collision renumbers the node's stream, its reports count from the
// new SSRC's first packet, not from the call's.
func TestSenderReportCountsStartOverWithANewSSRC(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	e.rtcpEvery = 40 * time.Millisecond
	a := newEndpoint(t)
	answer, err := e.Offer(context.Background(), OfferParams{SessionID: "echo", SDP: a.sdp("0"), Service: ServiceEcho})
	if err != nil {
		t.Fatal(err)
	}
	node := nodeAddr(t, answer)
	seq := uint16(0)
	echo := func(ssrc uint32) uint32 {
		t.Helper()
		seq++
		a.send(node, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc}, pcmuPayload(1))
		p, ok := a.recv(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d not echoed", seq)
		}
		return p.SSRC
	}
	const before, after = 20, 5
	var ours uint32
	for range before {
		ours = echo(42)
	}
	renewed := echo(ours) // the caller takes the node's SSRC: this one comes back from a new one
	if renewed == ours {
		t.Fatal("the collision did not renumber the echo")
	}
	for range after {
		echo(42)
	}
	last := time.Now()
	deadline := last.Add(2 * time.Second)
	for {
		pkts, _, ok := a.tryCompound(time.Until(deadline))
		if !ok {
			t.Fatalf("no sender report from SSRC %#x after the last echo", renewed)
		}
		sr, isSR := pkts[0].(*rtcp.SenderReport)
		if !isSR || sr.SSRC != renewed || ntpToTime(sr.NTPTime).Before(last) {
			continue
		}
		if sr.PacketCount != after+1 || sr.OctetCount != (after+1)*160 {
			t.Fatalf("the SR from the new SSRC counts %d packets and %d octets, want the %d sent under it (%d octets)",
				sr.PacketCount, sr.OctetCount, after+1, (after+1)*160)
		}
		return
	}
}

// An endpoint sending with SSRC 0 is heard like any other: when the node's
// own stream to it has SSRC 0 too, that is a collision.
func TestSSRCZeroCollidesLikeAnyOther(t *testing.T) {
	fx := newRTCPFixture(t, ServiceEcho)
	d := fx.s.dirs[0]
	d.out.ssrc = 0
	pkt, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 1, SSRC: 0}, Payload: pcmuPayload(1)}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d.HandleDatagram(pkt, fx.src, time.Now())
	if d.out.ssrc == 0 {
		t.Fatal("the caller sends with SSRC 0 and the echo to it still has SSRC 0")
	}
}

// A phone that changes SSRC mid-call (a re-INVITE, a transfer, a PBX
// switching its media source) does not erase the loss suffered before the
// change: the report blocks start over with the new source (RFC 3550
// §6.4.1), but the call's Lost and MOS cover the whole call, as the loss
// of a receiver retired on a codec clock change does.
func TestCallLossSurvivesSSRCChange(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	sent := 0
	for i := range 50 {
		if i >= 10 && i < 20 {
			continue // 10 of the first SSRC's 50 packets lost
		}
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 1}, pcmuPayload(1))
		sent++
	}
	receiveAll(t, b, sent)
	for i := range 50 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(5000 + i), Timestamp: uint32(777777 + i*160), SSRC: 2}, pcmuPayload(2))
	}
	receiveAll(t, b, 50)
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Legs[0].Lost; got != 10 {
		t.Fatalf("leg A Lost = %d after an SSRC change, want the 10 lost before it (MOS %.2f)", got, q.Legs[0].MOS)
	}
}
