package engine

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/portpool"
	"callgrid.dev/services/media/internal/quality"
	"callgrid.dev/services/media/internal/sdpneg"
	"callgrid.dev/services/media/internal/udpio"
)

// peer is where a leg's endpoint said it receives media, and its direction.
// It is replaced as a whole when the endpoint sends new SDP.
type peer struct {
	rtp, rtcp netip.AddrPort
	mux       bool
	direction sdpneg.Direction
	// heldRTP and heldRTCP are where the endpoint sent from before SDP
	// with an unspecified address (the RFC 2543 hold, c=0.0.0.0), which
	// names no source: 0.0.0.0 only says send nothing to it (RFC 3264
	// §8.4), and a phone playing its own music on hold goes on sending
	// from where it did. Packets from there are taken, though nothing
	// is sent there. Zero (matching no source) otherwise.
	heldRTP, heldRTCP netip.AddrPort
}

// latch is the source address a leg locked onto for one peer generation.
type latch struct {
	of   *peer
	addr netip.AddrPort
}

// leg is one side of a session: a socket pair facing one endpoint.
//
// The fields every packet reads or writes come first, on as few cache lines
// as possible: at a few thousand calls a leg is rarely in the cache when its
// next packet arrives 20 ms later.
type leg struct {
	// The first line: where the endpoint is, and the traffic counters.
	peer                 atomic.Pointer[peer]
	rtpLatch             atomic.Pointer[latch]
	rtp                  *udpio.Socket // pair.RTP
	packetsIn, bytesIn   atomic.Uint64
	packetsOut, bytesOut atomic.Uint64
	// payloadOut counts the payload octets sent to the endpoint, what a
	// sender report states (RFC 3550 §6.4.1): neither the fixed header
	// nor the CSRCs, header extension and padding a relayed packet keeps.
	// One add per packet, so that a report read between the updates of
	// a send (on the session's clock goroutine) sees a count that is
	// one packet behind at worst, never one derived from counters a
	// packet has updated only some of.
	payloadOut atomic.Uint64

	// The second line: the rest of what a packet's way in and out touches.
	lastRx  atomic.Int64 // Engine.now() of the last accepted packet, or of (re)negotiation
	metrics atomic.Pointer[trafficShard]
	rx      atomic.Pointer[quality.Receiver] // replaced when the codec's clock changes
	// A copy of rtpLatch for the leg's RTP handler, which alone sets it,
	// so that accepting a packet does not visit the latch object.
	latchedFor  *peer
	latchedAddr netip.AddrPort

	side      Leg
	pair      *portpool.Pair
	local     netip.AddrPort // advertised RTP address
	latch     bool           // Config.AllowLatching
	rtcpLatch atomic.Pointer[latch]
	shard     int // the session's event loop, whose traffic counters it uses

	drops        [numDropReasons]atomic.Uint64
	dropCounters *[numDropReasons]prometheus.Counter

	// Negotiated state, guarded by session.mu.
	builder  *sdpneg.Builder     // our SDPs to this leg's endpoint
	desc     *sdpneg.Description // the endpoint's last SDP
	peerDesc *sdpneg.Description // the SDP the current peer was taken from
	codec    sdpneg.Codec        // codec in use, numbered as the endpoint numbers it
	info     codec.Info          // the same codec, as the codec package knows it
	event    sdpneg.Codec        // telephone-event format, valid if hasEvent
	hasEvent bool                //
	offered  []sdpneg.Codec      // what we offered this leg (leg B before the answer)
	// The codecs of the endpoint's answer to our offer, in its numbering,
	// valid while desc is still answerDesc: it may send any of them, and
	// in our offer's numbering too.
	answerDesc   *sdpneg.Description
	answerCodecs []sdpneg.Codec
	switches     int // codec switches so far, for logging the first ones
	refusals     int // codec switches refused so far, likewise
	// rxRetired sums the receivers replaced when the codec's clock
	// changed, so the call's figures cover all of it. Replaced, never
	// changed in place.
	rxRetired *receiveTotals

	offeredEvents []sdpneg.Codec // DTMF formats we offered this leg

	// inForce is the node's SDP in force for the endpoint: the last it
	// sent it that was accepted, an answer (in force once sent) or an
	// offer the endpoint answered. offer is the node's last offer to the
	// endpoint, in force once the endpoint answers it. Nil for none.
	// The last SDP built for the endpoint is neither when it was an
	// early answer that a rollback undid, or an offer it rejected.
	inForce, offer []byte

	// RTCP bookkeeping for the reports this node sends when it terminates
	// the leg's stream.
	// lastSR is the endpoint's last SR: a report block's LSR and DLSR.
	lastSR     srRecord
	remoteSSRC atomic.Uint64 // a heardSSRC: that of the endpoint's stream
	// conflict is the last collision of the endpoint's SSRC with the
	// node's stream to it, owned by whatever feeds that stream: the
	// session's event loop, or the clock for the tone.
	conflict ssrcConflict

	// told is the sdpneg.Direction of the node's last SDP to the
	// endpoint: with the endpoint's own, what it may send and receive.
	told atomic.Int32

	_ [8]byte // to a whole number of cache lines, like direction
}

func newLeg(side Leg, pair *portpool.Pair, advertise netip.Addr, allowLatching bool, shard int, drops *[numDropReasons]prometheus.Counter) *leg {
	return &leg{
		side:         side,
		shard:        shard,
		pair:         pair,
		rtp:          pair.RTP,
		local:        netip.AddrPortFrom(advertise, uint16(pair.Port)),
		latch:        allowLatching,
		builder:      sdpneg.NewBuilder(),
		dropCounters: drops,
	}
}

// setPeer applies the endpoint's SDP: new address, direction, a fresh latch.
// SDP that names no address (hold, c=0.0.0.0) keeps the sources of the peer
// before it, where the endpoint still sends from.
func (l *leg) setPeer(m *sdpneg.Media, now time.Duration) {
	p := &peer{rtp: m.RTP(), rtcp: m.RTCP, mux: m.RTCPMux, direction: m.Direction}
	if m.Addr.IsUnspecified() {
		if prev := l.peer.Load(); prev != nil {
			p.heldRTP = sourceOf(prev, prev.rtp, prev.heldRTP, l.rtpLatch.Load())
			p.heldRTCP = sourceOf(prev, prev.rtcp, prev.heldRTCP, l.rtcpLatch.Load())
		}
	}
	l.peer.Store(p)
	// A re-negotiation restarts the media clock: a phone that just came
	// off hold gets a full timeout to resume sending.
	l.lastRx.Store(int64(now))
}

// sourceOf is where an endpoint sent from under peer p, given one of its
// latches: the latched address if it is p's, else the signalled one, else,
// for a peer itself on hold, where it sent from before that.
func sourceOf(p *peer, signalled, held netip.AddrPort, lt *latch) netip.AddrPort {
	switch {
	case lt != nil && lt.of == p:
		return lt.addr
	case usable(signalled):
		return signalled
	}
	return held
}

// admitRTP reports whether an RTP datagram from src may be taken on this
// leg. A source the SDP did not name, while latching is allowed and the
// leg has not latched for this peer, is a candidate: it is returned with
// the peer, and the caller latches onto it only once the datagram proved
// to be the call's RTP, so a stranger's noise takes nothing. The signalled
// address is the endpoint by its own word: it is always taken, and takes
// the leg back from an address latched before it. While the endpoint is
// on hold by address it names none, and its source before the hold is
// taken without latching: a latch would be sent RTCP, which it asked not
// to be. That case comes after the latched one, so the packets of a
// call in progress pay nothing for it. Only the leg's RTP handler calls
// it.
func (l *leg) admitRTP(src netip.AddrPort) (ok bool, candidateFor *peer) {
	p := l.peer.Load()
	switch {
	case p == nil:
		return false, nil
	case l.latchedFor == p && l.latchedAddr == src:
		return true, nil
	case src == p.rtp:
		l.latchOnto(p, src)
		return true, nil
	case src == p.heldRTP:
		return true, nil
	case l.latch && l.latchedFor != p:
		return true, p
	}
	return false, nil
}

// direction is the stream's direction as negotiated: what the endpoint
// declared, within what the node's SDP to it allows (a phone that offered
// sendrecv and was answered sendonly only receives).
func (l *leg) direction(p *peer) sdpneg.Direction {
	told := sdpneg.Direction(l.told.Load())
	if told == sdpneg.DirectionUnknown {
		return p.direction
	}
	return p.direction.Within(told)
}

// latchOnto locks the leg's media for peer p onto src, until the endpoint
// sends new SDP.
func (l *leg) latchOnto(p *peer, src netip.AddrPort) {
	l.rtpLatch.Store(&latch{of: p, addr: src})
	l.latchedFor, l.latchedAddr = p, src
}

// acceptRTCP reports whether an RTCP packet from src belongs to this leg.
// On the RTCP port it is accepted from the signalled RTCP address, or, when
// latching, from the host the RTP latched onto; muxed RTCP must come from
// the RTP source itself. As in admitRTP, the signalled address is the
// endpoint by its own word: it is always taken, and takes the RTCP latch
// back from another port of the same host (another phone behind the same
// NAT) latched before it, so that the endpoint's reports are not refused
// and the node's are not sent to a stranger.
func (l *leg) acceptRTCP(src netip.AddrPort, muxed bool) bool {
	p := l.peer.Load()
	if p == nil {
		return false
	}
	rtpLatch := l.rtpLatch.Load()
	if rtpLatch != nil && rtpLatch.of != p {
		rtpLatch = nil
	}
	if muxed {
		// The signalled address is taken without latching: the RTP latch
		// is the RTP handler's, and the endpoint's next RTP from there
		// takes it back.
		if rtpLatch != nil && src != p.rtp {
			return rtpLatch.addr == src
		}
		return src == p.rtp || src == p.heldRTP
	}
	lt := l.rtcpLatch.Load()
	latched := lt != nil && lt.of == p
	switch {
	case latched && lt.addr == src:
		return true
	case src == p.rtcp:
		l.rtcpLatch.Store(&latch{of: p, addr: src})
		return true
	case latched:
		return false
	case src == p.heldRTCP:
		// Not latched, as in admitRTP: nothing is sent to a held peer.
		return true
	case l.latch && rtpLatch != nil && rtpLatch.addr.Addr() == src.Addr():
		l.rtcpLatch.Store(&latch{of: p, addr: src})
		return true
	}
	return false
}

// rtpDestination returns where RTP for this leg's endpoint goes, and false
// when it must not be sent (unknown address, or the endpoint does not want
// media: on hold).
func (l *leg) rtpDestination() (netip.AddrPort, bool) {
	return rtpDestination(l.peer.Load(), l.rtpLatch.Load())
}

// rtpDestination is where RTP goes for a peer and the leg's current latch.
func rtpDestination(p *peer, lt *latch) (netip.AddrPort, bool) {
	if p == nil || !p.direction.Receives() {
		return netip.AddrPort{}, false
	}
	dst := p.rtp
	if lt != nil && lt.of == p {
		dst = lt.addr
	}
	return dst, usable(dst)
}

// rtcpDestination returns the socket and address RTCP for this leg goes to.
func (l *leg) rtcpDestination() (netip.AddrPort, bool, bool) {
	p := l.peer.Load()
	if p == nil {
		return netip.AddrPort{}, false, false
	}
	if p.mux {
		dst := p.rtp
		if lt := l.rtpLatch.Load(); lt != nil && lt.of == p {
			dst = lt.addr
		}
		return dst, true, usable(dst)
	}
	dst := p.rtcp
	if lt := l.rtcpLatch.Load(); lt != nil && lt.of == p {
		dst = lt.addr
	}
	return dst, false, usable(dst)
}

func usable(a netip.AddrPort) bool {
	return a.IsValid() && a.Port() != 0 && !a.Addr().IsUnspecified()
}

// sendRTP writes one packet to the endpoint from the leg's RTP socket, the
// port the endpoint sends to (symmetric RTP).
func (l *leg) sendRTP(pkt []byte) bool {
	dst, ok := l.rtpDestination()
	return ok && l.sendRTPTo(pkt, dst)
}

// sendRTPTo is sendRTP to a destination the caller just looked up.
func (l *leg) sendRTPTo(pkt []byte, dst netip.AddrPort) bool {
	if err := l.rtp.WriteTo(pkt, dst); err != nil {
		return false
	}
	payload := len(pkt) - rtpHeaderLen
	if pkt[0]&0x3f != 0 {
		// Padding, an extension or CSRCs: rare, and what the node
		// generates has none, so a bare header costs one test.
		payload -= rtpOverhead(pkt)
	}
	l.packetsOut.Add(1)
	l.bytesOut.Add(uint64(len(pkt)))
	l.payloadOut.Add(uint64(max(payload, 0)))
	if m := l.metrics.Load(); m != nil {
		m.packetsOut.Add(1)
		m.bytesOut.Add(uint64(len(pkt)))
	}
	return true
}

// sent is what the leg's endpoint has been sent: packets, and payload
// octets alone, without header or padding (RFC 3550 §6.4.1). What the
// node generates (tone, transcoded audio) has a bare 12-byte header, but
// packets it passes on (echoed audio, events carried across a transcoder)
// keep the sender's CSRCs, extension and padding, which the send path
// left out of payloadOut. Each count is read as it stands: nothing is
// derived from several counters a concurrent send may have updated only
// some of, so a count cannot go backwards or wrap.
func (l *leg) sent() sendCounts {
	return sendCounts{packets: l.packetsOut.Load(), octets: l.payloadOut.Load()}
}

// rtpOverhead is how many octets of an RTP packet the node sends are
// neither its fixed header nor its payload: CSRCs, the header extension
// and padding (RFC 3550 §5.1, §5.3.1). The packet was parsed on its way
// in; the bounds are kept all the same.
func rtpOverhead(pkt []byte) int {
	room := len(pkt) - rtpHeaderLen
	n := 4 * int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 && rtpHeaderLen+n+4 <= len(pkt) {
		n += 4 + 4*int(binary.BigEndian.Uint16(pkt[rtpHeaderLen+n+2:]))
	}
	if pkt[0]&0x20 != 0 && room > 0 {
		n += int(pkt[len(pkt)-1])
	}
	return min(n, room)
}

// drop counts a discarded packet.
func (l *leg) drop(r dropReason) {
	l.drops[r].Add(1)
	l.dropCounters[r].Inc()
}

// received counts an accepted RTP packet.
func (l *leg) received(n int, now time.Duration) {
	l.lastRx.Store(int64(now))
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(n))
	if m := l.metrics.Load(); m != nil {
		m.packetsIn.Add(1)
		m.bytesIn.Add(uint64(n))
	}
}

// observe feeds an accepted packet to the leg's receive statistics.
func (l *leg) observe(seq uint16, ts uint32, kind ptKind, now time.Time) {
	rx := l.rx.Load()
	switch {
	case rx == nil:
	case kind == ptEvent:
		rx.UpdateEvent(seq)
	default:
		rx.Update(seq, ts, now)
	}
}

// observeDiscarded feeds a packet that arrived but that the node discards
// (a payload type it cannot route, a late packet of the codec just left) to
// the leg's receive statistics: in sequence, so that it does not count as
// lost, and not in jitter, as its timestamp may run on another clock than
// the receiver's. Only discarded packets come here.
func (l *leg) observeDiscarded(seq uint16) {
	if rx := l.rx.Load(); rx != nil {
		rx.UpdateEvent(seq)
	}
}

// newSource restarts the receive statistics for a new SSRC from the
// endpoint.
func (l *leg) newSource() {
	if rx := l.rx.Load(); rx != nil {
		rx.NewSource()
	}
}
