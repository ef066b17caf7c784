package engine

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/quality"
)

const (
	rtpHeaderLen = 12
	// maxPacket is the largest datagram read or written. RTP over the
	// public internet stays under the Ethernet MTU; anything larger is
	// truncated by the read and then fails to parse.
	maxPacket = 1500
)

// ptKind classifies the payload types a source may send.
type ptKind uint8

const (
	ptUnknown ptKind = iota
	ptAudio
	ptEvent
	// ptSwitch is another codec of the source's answer: RFC 3264 §6.1 lets
	// an answerer send any codec it listed, so the leg switches to it.
	ptSwitch
)

// routeMode is what a direction does with a source's packets.
type routeMode uint8

const (
	// routeSink consumes packets (counted, measured, not forwarded): leg A
	// of a tone session.
	routeSink routeMode = iota + 1
	// routePassthrough forwards packets with the header rewritten.
	routePassthrough
	// routeTranscode decodes, re-encodes and forwards.
	routeTranscode
)

// route is the negotiated, immutable plan for one direction. Negotiation
// builds a new route and swaps it in; the reader picks it up on its next
// packet, with no lock on the packet path.
//
// The fields every packet reads come first, so that with a static payload
// type the lookup stays on the route's first cache line.
type route struct {
	mode              routeMode
	audioPT, eventPT  uint8       // payload types the destination expects
	outClock, inClock int         // audio RTP clocks, destination and source
	tc                *transcoder // routeTranscode only

	kinds [128]ptKind // payload types accepted from the source

	inEventClock, outEventClock int // telephone-event clocks, 0 when not forwarded
	// packetTime is what each transcoded packet holds: what the
	// destination asked for, as packetTimeFor allows.
	packetTime time.Duration
	// opus is what the transcoder's encoder runs as, as the destination's
	// fmtp allows (encoderOptions); routeTranscode only.
	opus codec.OpusOptions
}

// direction carries packets from one leg's endpoint to a destination leg
// (the other leg, the same leg for echo, none for a sink). Everything but
// route is owned by the source leg's RTP handler (the session's event loop).
//
// What a relayed packet touches is kept together: at a few thousand calls
// the node's state does not fit in the caches, and each separate object a
// packet visits is a memory stall that costs more than the work done there.
//
// A direction is also the handler of its source leg's RTP socket, so the
// object a packet is delivered to is the one it needs first. It is 256
// bytes: objects of that size class start on a cache line, so its fields
// keep the lines they were placed on.
type direction struct {
	from, to *leg
	route    atomic.Pointer[route]
	cur      *route
	hdr      rtpHeader
	// Copied from cur, so relaying an audio packet does not visit the route.
	mode     routeMode
	audioPT  uint8
	outClock int
	srcSSRC  heardSSRC // the last SSRC seen from the source
	// The kind of the payload type last seen, while hasKind.
	lastPT   uint8
	lastKind ptKind
	hasKind  bool

	dst destination
	out outStream
	buf []byte // generated packets (transcoded audio, event segment ends)

	s *session // for RTCP multiplexed on the RTP port

	// The event being carried between different telephone-event clocks.
	events eventTrack
}

// destination caches where the destination leg's RTP goes, computed from
// that leg's peer and latch and valid for as long as both are the same
// objects: each is replaced as a whole, never changed in place.
type destination struct {
	peer  *peer
	latch *latch
	addr  netip.AddrPort
	ok    bool
}

// rtpDestination is to.rtpDestination, without visiting the peer and latch
// while neither changed.
func (d *direction) rtpDestination() (netip.AddrPort, bool) {
	p, lt := d.to.peer.Load(), d.to.rtpLatch.Load()
	if p != d.dst.peer || lt != d.dst.latch || p == nil {
		addr, ok := rtpDestination(p, lt)
		d.dst = destination{peer: p, latch: lt, addr: addr, ok: ok}
	}
	return d.dst.addr, d.dst.ok
}

// rtpHeader is what the node reads from an RTP header (RFC 3550 §5.1).
type rtpHeader struct {
	marker      bool
	payloadType uint8
	seq         uint16
	timestamp   uint32
	ssrc        uint32
}

func newDirection(from, to *leg, transparent bool) *direction {
	return &direction{from: from, to: to, out: newOutStream(transparent), buf: make([]byte, maxPacket)}
}

// HandleDatagram is what arrives on the source leg's RTP socket. RTCP
// arriving there (rtcp-mux) is told apart by its packet type (RFC 5761 §4).
func (d *direction) HandleDatagram(pkt []byte, src netip.AddrPort, now time.Time) {
	if len(pkt) > maxPacket {
		d.from.drop(dropMalformed)
		return
	}
	if looksLikeRTCP(pkt) {
		d.s.handleRTCP(d.from, pkt, src, true, now)
		return
	}
	d.handleRTP(pkt, src, now, stampOf(now))
}

// Prefetch loads the start of what relaying a packet reads: the two legs,
// the source's receive statistics and the destination socket.
func (d *direction) Prefetch() uintptr {
	from := d.from
	sum := uintptr(d.out.ssrc) + uintptr(unsafe.Pointer(d.dst.peer)) + uintptr(unsafe.Pointer(from.peer.Load()))
	if rx := from.rx.Load(); rx != nil {
		sum += rx.Prefetch()
	}
	if to := d.to; to != nil {
		sum += uintptr(unsafe.Pointer(to.peer.Load())) + uintptr(unsafe.Pointer(to.metrics.Load())) + uintptr(to.rtp.Port())
	}
	return sum
}

// handleRTP processes one datagram that is not RTCP.
func (d *direction) handleRTP(pkt []byte, src netip.AddrPort, now time.Time, stamp time.Duration) {
	l := d.from
	ok, candidateFor := l.admitRTP(src)
	if !ok {
		d.refuse(pkt, stamp)
		return
	}
	payload, ok := d.parse(pkt)
	if !ok {
		l.drop(dropMalformed)
		return
	}
	if candidateFor != nil && !d.latch(candidateFor, src, len(pkt), stamp) {
		return
	}
	l.received(len(pkt), stamp)
	if heard(d.hdr.ssrc) != d.srcSSRC {
		d.newSource(src, now)
	}
	r := d.route.Load()
	if r == nil {
		l.drop(dropNoDestination)
		return
	}
	if r != d.cur {
		d.adopt(r)
	}
	kind := d.kind(d.hdr.payloadType)
	if kind == ptSwitch {
		if d.late() {
			// A packet of the codec the endpoint just left, delayed past
			// the first ones of its new codec, is not a switch back:
			// following it would switch twice, and restart the stream to
			// the other leg twice, for one packet too late to play.
			l.observeDiscarded(d.hdr.seq)
			return
		}
		if !d.s.switchCodec(l, d.hdr.payloadType) {
			l.observeDiscarded(d.hdr.seq)
			l.drop(dropUnknownPayloadType)
			return
		}
		r = d.route.Load()
		d.sendQueuedAcrossSwitch(r, now)
		d.adopt(r)
		kind = d.kind(d.hdr.payloadType)
	}
	if kind == ptUnknown || kind == ptSwitch {
		// Comfort noise never negotiated, DTMF the far leg cannot take:
		// the node refuses them, the network did not lose them.
		l.observeDiscarded(d.hdr.seq)
		l.drop(dropUnknownPayloadType)
		return
	}
	l.observe(d.hdr.seq, d.hdr.timestamp, kind, now)
	if d.mode == routeSink {
		return
	}
	dst, ok := d.rtpDestination()
	if !ok {
		// Nowhere to send (on hold): skip the work, transcoding included.
		l.drop(dropNoDestination)
		return
	}
	switch {
	case d.mode == routePassthrough:
		if d.rewrite(r, pkt, payload, kind, now) && !d.to.sendRTPTo(pkt, dst) {
			l.drop(dropNoDestination)
		}
	case kind == ptEvent:
		d.transcodeEvent(r, pkt, payload, now)
	default:
		if !r.tc.audio(d, r, payload, now) {
			l.drop(dropCodecError)
		}
	}
}

// refuse counts an RTP datagram the source leg did not admit. Before the
// leg's endpoint sent SDP (a callee whose RTP arrives ahead of its answer)
// the leg has no peer to tell its packets from a stranger's: the leg's
// port was given to that endpoint alone, so what parses as RTP is counted
// as the leg's, and dropped for having nowhere to go yet, as the operator
// expects a call's first packets to be, not as an attack. From then on,
// a source the leg does not take is a wrong one.
func (d *direction) refuse(pkt []byte, stamp time.Duration) {
	l := d.from
	if l.peer.Load() != nil {
		l.drop(dropWrongSource)
		return
	}
	// The header parsed is that of a packet dropped: nothing reads it
	// before the next packet's replaces it.
	if _, ok := d.parse(pkt); !ok {
		l.drop(dropMalformed)
		return
	}
	l.received(len(pkt), stamp)
	l.drop(dropNoDestination)
}

// newSource takes on the SSRC in d.hdr, from src, as the source leg's
// stream: a new endpoint stream, whose statistics and events start afresh,
// and whose SSRC the node's own stream to that endpoint must not share.
// Only a change of SSRC comes here, so a steady stream pays nothing for it.
func (d *direction) newSource(src netip.AddrPort, now time.Time) {
	l := d.from
	d.srcSSRC = heard(d.hdr.ssrc)
	l.remoteSSRC.Store(uint64(d.srcSSRC))
	l.newSource()
	d.events.active = false
	if o := d.streamToSource(); o != nil {
		d.s.avoidCollision(l, o, d.hdr.ssrc, src, now)
	}
}

// parse validates an RTP packet into d.hdr and returns its payload.
// CSRCs and a header extension are skipped, not interpreted: a relay
// passes them on as they are.
func (d *direction) parse(pkt []byte) ([]byte, bool) {
	if len(pkt) < rtpHeaderLen || pkt[0]>>6 != 2 {
		return nil, false
	}
	n := rtpHeaderLen + 4*int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 {
		if len(pkt) < n+4 {
			return nil, false
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(pkt[n+2:]))
	}
	if len(pkt) < n {
		return nil, false
	}
	d.hdr = rtpHeader{
		marker:      pkt[1]&0x80 != 0,
		payloadType: pkt[1] & 0x7f,
		seq:         binary.BigEndian.Uint16(pkt[2:]),
		timestamp:   binary.BigEndian.Uint32(pkt[4:]),
		ssrc:        binary.BigEndian.Uint32(pkt[8:]),
	}
	payload := pkt[n:]
	if pkt[0]&0x20 != 0 {
		if len(payload) == 0 {
			return nil, false
		}
		pad := int(payload[len(payload)-1])
		if pad == 0 || pad > len(payload) {
			return nil, false
		}
		payload = payload[:len(payload)-pad]
	}
	return payload, true
}

// adopt switches to a new route. A passthrough stream whose clock changed
// (a codec change by re-INVITE) is re-based so its timestamps stay
// continuous at the new rate.
func (d *direction) adopt(r *route) {
	if d.cur != nil && d.cur.outClock != r.outClock {
		d.out.rebase = true
	}
	if r.tc != nil && (d.cur == nil || d.cur.tc != r.tc) {
		// A transcoder coming back into use (a codec switched to and
		// back) begins a stream anew rather than continuing an old one.
		r.tc.halt()
	}
	if r.tc != nil {
		// The destination may have asked for another packet time or sent
		// another fmtp (a re-INVITE); the transcoder is this reader's to
		// change, and a new route is the only time it is changed.
		r.tc.usePacketTime(r.packetTime)
		if err := r.tc.useOpus(r.opus); err != nil && d.s != nil {
			d.s.log.Warn().Err(err).Msg("transcoder keeps its encoder settings")
		}
	}
	if d.cur == nil || !d.cur.carriesEventsAs(r) {
		// The event being carried would be placed elsewhere now.
		d.events.active = false
	}
	d.cur = r
	d.mode, d.audioPT, d.outClock = r.mode, r.audioPT, r.outClock
	d.hasKind = false
}

// carriesEventsAs reports whether an event goes to the same place on the
// destination clock under route o as under r: the same telephone-event
// clocks, and its timestamp mapped by the same transcoder, or relayed with
// no clock change to re-base the stream. Most new routes (a session
// refresh, a hold, a new address or packet time) change none of that, and
// a key held across one must go on as the one event it is: begun anew,
// its destination segments already ended would be laid out again, or a
// later source segment taken for its start, and the far end would decode
// a second key press.
func (r *route) carriesEventsAs(o *route) bool {
	return r.tc == o.tc && r.outClock == o.outClock &&
		r.inEventClock == o.inEventClock && r.outEventClock == o.outEventClock
}

// late reports whether the packet in d.hdr is behind the newest one this
// direction has forwarded from the same source under its current route, or
// repeats it: what the relay or the transcoder last numbered says, so the
// packet path keeps no more state for it.
func (d *direction) late() bool {
	var newest uint16
	switch o := &d.out; {
	case d.mode == routePassthrough && o.started && !o.rebase && o.inSSRC == d.hdr.ssrc:
		newest = o.seq - o.seqDelta
	case d.mode == routeTranscode && d.cur.tc.started && d.cur.tc.inSSRC == d.hdr.ssrc:
		newest = d.cur.tc.lastSeq
	default:
		return false
	}
	return newest-d.hdr.seq < quality.MaxMisorder
}

// latch latches the leg onto src, a source its SDP did not name, when the
// datagram just parsed, size bytes arrived at stamp, is the call's RTP: a
// payload type the route negotiated. Anything else is dropped and latches
// nothing. Before the answer there is no route to tell the call's payload
// types by, and nowhere to send: the packet is counted as the leg's and
// dropped for want of a destination, as one from the signalled address
// then is, and as refuse counts one on a leg with no SDP yet.
func (d *direction) latch(p *peer, src netip.AddrPort, size int, stamp time.Duration) bool {
	r := d.route.Load()
	if r == nil {
		d.from.received(size, stamp)
		d.from.drop(dropNoDestination)
		return false
	}
	if r != d.cur {
		d.adopt(r)
	}
	if d.kind(d.hdr.payloadType) == ptUnknown {
		d.from.drop(dropUnknownPayloadType)
		return false
	}
	d.from.latchOnto(p, src)
	return true
}

// kind classifies a payload type under the current route. A stream keeps
// one payload type for long runs, so the last answer is kept.
func (d *direction) kind(pt uint8) ptKind {
	if !d.hasKind || pt != d.lastPT {
		d.lastPT, d.lastKind, d.hasKind = pt, d.cur.kinds[pt], true
	}
	return d.lastKind
}

// rewrite turns a relayed packet into the destination's numbering in place:
// payload type, sequence, timestamp, SSRC. Header extensions, CSRCs and
// padding are left as they are. It reports whether the packet is to be
// sent: an event packet may say nothing the destination has not been told.
func (d *direction) rewrite(r *route, pkt, payload []byte, kind ptKind, now time.Time) bool {
	if kind == ptEvent {
		return d.rewriteEvent(r, pkt, payload, now)
	}
	seq, ts, marker, ok := d.out.relay(d.hdr.ssrc, d.hdr.seq, d.hdr.timestamp, d.outClock, now)
	if !ok {
		d.from.drop(dropTooLate)
		return false
	}
	writeHeaderFields(pkt, d.audioPT, marker || d.hdr.marker, seq, ts, d.out.ssrc)
	return true
}

// send forwards pkt to the destination endpoint.
func (d *direction) send(pkt []byte) {
	if !d.to.sendRTP(pkt) {
		d.from.drop(dropNoDestination)
	}
}

// emit sends a generated packet, lasting span, whose payload is already in
// d.buf.
func (d *direction) emit(pt uint8, ts uint32, marker bool, payloadLen int, span time.Duration, now time.Time) {
	seq := d.out.next(ts, now, span)
	d.buf[0] = 0x80 // version 2, no padding, extension or CSRC
	writeHeaderFields(d.buf, pt, marker, seq, ts, d.out.ssrc)
	d.send(d.buf[:rtpHeaderLen+payloadLen])
}

// writeHeaderFields sets the fields this node rewrites in an RTP header,
// leaving byte 0 (version, padding, extension, CSRC count) alone.
func writeHeaderFields(b []byte, pt uint8, marker bool, seq uint16, ts, ssrc uint32) {
	b[1] = pt & 0x7f
	if marker {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], ssrc)
}
