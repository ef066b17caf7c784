package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/pion/rtcp"
)

// rtcpInterval is the RFC 3550 §6.2 minimum report interval for a
// two-party session: each interval this node waits between reports on a
// stream it terminates is drawn at random around it (§6.3.1).
const rtcpInterval = 5 * time.Second

// rtcpCNAME identifies this node in the SDES item every compound report
// must carry.
const rtcpCNAME = "callgrid-media"

// looksLikeRTCP tells RTCP from RTP on a muxed port by the packet type
// byte (RFC 5761 §4): 192-223 is RTCP.
func looksLikeRTCP(pkt []byte) bool {
	return len(pkt) >= 8 && pkt[0]>>6 == 2 && pkt[1] >= 192 && pkt[1] <= 223
}

// validRTCP checks a compound RTCP packet's framing (RFC 3550 A.2): every
// header is version 2 with an RTCP type, the lengths add up to the
// datagram, only the last packet is padded and by no more than it holds,
// and what a packet's count says it holds fits in its length. Anything
// less is dropped, rather than relayed to an endpoint or read with one
// packet's fields taken from the next.
func validRTCP(pkt []byte) bool {
	if len(pkt) < 8 {
		return false
	}
	for off := 0; off < len(pkt); {
		if len(pkt)-off < 4 || pkt[off]>>6 != 2 || pkt[off+1] < 192 || pkt[off+1] > 223 {
			return false
		}
		n := (int(binary.BigEndian.Uint16(pkt[off+2:])) + 1) * 4
		if n > len(pkt)-off {
			return false
		}
		body := n
		if pkt[off]&0x20 != 0 {
			pad := int(pkt[off+n-1])
			if off+n != len(pkt) || pad == 0 || pad > n-4 {
				return false
			}
			body -= pad
		}
		if !countFits(pkt[off]&0x1f, pkt[off+1], body) {
			return false
		}
		off += n
	}
	return true
}

// countFits reports whether count items of an RTCP packet of type pt fit
// in its n bytes: report blocks, SDES chunks (an SSRC and a terminating
// zero, padded to a word, at the least), BYE sources; feedback needs its
// two SSRCs.
func countFits(count, pt uint8, n int) bool {
	c := int(count)
	switch pt {
	case rtcpSR:
		return n >= 28+c*reportBlockLen
	case rtcpRR:
		return n >= 8+c*reportBlockLen
	case rtcpSDES:
		return n >= 4+c*8
	case rtcpBYE:
		return n >= 4+c*4
	case rtcpRTPFB, rtcpPSFB:
		return n >= 12
	}
	return true
}

// handleRTCP relays RTCP between bridged legs, or absorbs it on a leg whose
// stream this node terminates, keeping what its reports need.
func (s *session) handleRTCP(l *leg, pkt []byte, src netip.AddrPort, muxed bool, now time.Time) {
	if !l.acceptRTCP(src, muxed) {
		// Before the endpoint's SDP, as for its RTP (direction.refuse).
		if l.peer.Load() == nil && validRTCP(pkt) {
			l.drop(dropNoDestination)
			return
		}
		l.drop(dropWrongSource)
		return
	}
	if !validRTCP(pkt) {
		l.drop(dropMalformed)
		return
	}
	s.e.metrics.rtcpIn.Inc()
	d := s.dirs[l.side.index()]
	if d == nil {
		return
	}
	if r := d.route.Load(); r != nil && r.mode == routePassthrough && d.to != nil && d.to != l {
		// The session's loop runs this and both directions' packet
		// handlers, so their streams' numbering can be read here.
		if rev := s.dirs[1-l.side.index()]; rev != nil {
			translateRTCP(pkt, &d.out, &rev.out, d.to)
		}
		d.to.sendRTCP(pkt, s.e)
		return
	}
	// A sender report (validRTCP made sure the first packet holds one
	// whole): remember whose it is and its NTP time, for LSR/DLSR in ours.
	if pkt[1] == rtcpSR {
		l.lastSR.store(binary.BigEndian.Uint32(pkt[4:]), binary.BigEndian.Uint32(pkt[10:]), srStamp(now))
	}
}

// srStamp is when an SR arrived at now, as srRecord keeps it: its
// activity stamp, but never 0, which says no SR arrived. Only an SR read
// at the epoch itself moves, by a nanosecond, far below DLSR's 1/65536 s.
func srStamp(now time.Time) time.Duration {
	return max(stampOf(now), 1)
}

// sendRTCP writes an RTCP packet to the leg's endpoint: from the RTP
// socket when it muxes, else from the RTCP socket.
func (l *leg) sendRTCP(pkt []byte, e *Engine) {
	dst, muxed, ok := l.rtcpDestination()
	if !ok {
		return
	}
	conn := l.pair.RTCP
	if muxed {
		conn = l.pair.RTP
	}
	if err := conn.WriteTo(pkt, dst); err == nil {
		e.metrics.rtcpOut.Inc()
	}
}

// sendBye tells the endpoint the node no longer sends with ssrc: a compound
// RR, SDES and BYE from it (RFC 3550 §6.1, §6.6).
func (l *leg) sendBye(ssrc uint32, e *Engine, now time.Time) {
	pkt, err := l.report(newStreamReport(ssrc), 0, false, true, now)
	if err != nil {
		return
	}
	l.sendRTCP(pkt, e)
}

// reporter sends the RTCP of the streams a session terminates (echo, tone,
// transcoding). It is owned by the session's clock goroutine.
type reporter struct {
	s      *session
	player *tonePlayer // ServiceTone's, else nil
	legs   [2]legReports
}

// legReports is what the reporter remembers of its reports to one leg.
type legReports struct {
	// packets is the count of RTP packets sent to the leg at the last
	// report and at the one before it.
	packets [2]uint64
	// joined: the leg was sent a report or RTP, so the endpoint knows our
	// SSRC and may be told it leaves (RFC 3550 §6.3.7).
	joined bool
}

// ourStream is the stream this node sends the leg when it terminates the
// leg's media, and the RTP clock it runs at; ok is false when the node
// relays the leg's RTCP instead.
func (rp *reporter) ourStream(i int) (st *streamReport, clock int, ok bool) {
	s := rp.s
	switch {
	case s.service == ServiceTone:
		p := rp.player
		if p.src != nil {
			clock = p.src.info.ClockRate
		}
		return p.out.report, clock, true
	case s.service == ServiceEcho:
		if r := s.dirs[0].route.Load(); r != nil {
			clock = r.outClock
		}
		return s.dirs[0].out.report, clock, true
	}
	r := s.dirs[i].route.Load()
	if r == nil || r.mode != routeTranscode {
		return nil, 0, false
	}
	// The stream to leg i comes from the other direction, at its
	// destination's clock.
	if back := s.dirs[1-i].route.Load(); back != nil {
		clock = back.outClock
	}
	return s.dirs[1-i].out.report, clock, true
}

// send sends a report to every leg whose stream this node terminates,
// describing what it received and, as a sender report, what it sent; with
// bye, the session is ending and each leg that knows our SSRC is told it
// leaves.
func (rp *reporter) send(now time.Time, bye bool) {
	for i, l := range rp.s.legs {
		if l == nil {
			continue
		}
		st, clock, ok := rp.ourStream(i)
		if !ok {
			continue
		}
		lr := &rp.legs[i]
		sent := l.packetsOut.Load()
		if bye && !lr.joined && sent == 0 {
			// RFC 3550 §6.3.7: no BYE from a participant never heard.
			continue
		}
		// RFC 3550 §6.4: an SR while we sent RTP since the report before
		// last (§6.3.8's we_sent), else an RR.
		sender := sent > lr.packets[1] && clock > 0
		lr.packets[1], lr.packets[0] = lr.packets[0], sent
		pkt, err := l.report(st, clock, sender, bye, now)
		if err != nil {
			continue
		}
		l.sendRTCP(pkt, rp.s.e)
		lr.joined = true
	}
}

// report builds a compound report about the leg's stream (RFC 3550 §6.1:
// SR or RR first, then SDES with our CNAME, then BYE if leaving).
func (l *leg) report(ours *streamReport, clock int, sender, bye bool, now time.Time) ([]byte, error) {
	ssrc, sent := ours.sentUnder(l)
	blocks := l.receptionReports(stampOf(now))
	var first rtcp.Packet = &rtcp.ReceiverReport{SSRC: ssrc, Reports: blocks}
	if sender {
		// The counts are of this SSRC's packets alone: RFC 3550 §6.4.1
		// has them start over when the sender's SSRC changes. They
		// wrap at 32 bits, as the fields do.
		first = &rtcp.SenderReport{
			SSRC:        ssrc,
			NTPTime:     ntpTime(now),
			RTPTime:     ours.rtpTime(now, clock),
			PacketCount: uint32(sent.packets),
			OctetCount:  uint32(sent.octets),
			Reports:     blocks,
		}
	}
	pkts := []rtcp.Packet{first, &rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{
		Source: ssrc,
		Items:  []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: rtcpCNAME}},
	}}}}
	if bye {
		pkts = append(pkts, &rtcp.Goodbye{Sources: []uint32{ssrc}})
	}
	return rtcp.Marshal(pkts)
}

// receptionReports is the report block about the endpoint's stream, once
// its source is known and past probation.
func (l *leg) receptionReports(now time.Duration) []rtcp.ReceptionReport {
	rx := l.rx.Load()
	remote, ok := l.remote()
	if !ok || rx == nil {
		return nil
	}
	st := rx.Snapshot()
	if !st.Valid {
		return nil
	}
	block := rtcp.ReceptionReport{
		SSRC:               remote,
		FractionLost:       st.FractionLostQ8,
		TotalLost:          uint32(st.CumulativeLost) & 0xffffff,
		LastSequenceNumber: st.ExtendedHighestSeq,
		Jitter:             st.Jitter,
	}
	// LSR and DLSR (RFC 3550 §6.4.1) are about the SR of this very
	// source: one from a source the endpoint has since replaced would
	// give it a round trip measured against another stream's clock.
	if ssrc, lsr, at, ok := l.lastSR.load(); ok && ssrc == remote {
		// An SR read after this report's time was taken is no delay
		// at all, not a wrapped one.
		if delay, ok := dlsr(max(now-at, 0)); ok {
			block.LastSenderReport, block.Delay = lsr, delay
		}
	}
	return []rtcp.ReceptionReport{block}
}

// maxDLSR is the longest delay DLSR can say: 32 bits of 1/65536 s, some
// 18 hours.
const maxDLSR = time.Duration(1<<32-1) * time.Second / 65536

// dlsr is delay in DLSR's units of 1/65536 s (RFC 3550 §6.4.1); ok is
// false past what 32 bits hold. An endpoint that sent no SR for that long
// is reported as one that sent none (LSR and DLSR 0): a wrapped DLSR
// would give it a round trip hours off, and a saturated one a round trip
// of some 18 hours that no network has.
func dlsr(delay time.Duration) (uint32, bool) {
	if delay > maxDLSR {
		return 0, false
	}
	// Whole seconds and the fraction apart: delay*65536 overflows an
	// int64 of nanoseconds after about 39 hours, and delay is bounded
	// here only by the check above.
	secs, frac := delay/time.Second, delay%time.Second
	return uint32(secs)<<16 | uint32(frac*65536/time.Second), true
}

// ntpTime is t as a 64-bit NTP timestamp (RFC 3550 §4): seconds since
// 1900 and a binary fraction.
func ntpTime(t time.Time) uint64 {
	const unixToNTP = 2208988800 // seconds from 1900 to 1970
	secs := uint64(t.Unix() + unixToNTP)
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}

// reportInterval draws the wait before the next report: uniformly from
// half to one and a half times the interval, as RFC 3550 §6.3.1 has it,
// so that sessions set up together (a node taking over calls) do not
// report in lockstep.
func reportInterval(every time.Duration) time.Duration {
	return every/2 + rand.N(every)
}

// clock is the session's timer goroutine: it paces the tone service and
// sends RTCP reports, and a BYE when the session ends.
func (s *session) clock() {
	defer s.wg.Done()
	reports := time.NewTimer(reportInterval(s.e.rtcpEvery))
	defer reports.Stop()
	rp := &reporter{s: s}
	var tone *toneClock
	if s.service == ServiceTone {
		rp.player = newTonePlayer()
		tone = newToneClock(rp.player)
		defer tone.stop()
		tone.tick(s, time.Now())
	}
	for {
		select {
		case <-s.done:
			rp.send(time.Now(), true)
			return
		case now := <-tone.ticks():
			tone.tick(s, now)
		case <-reports.C:
			// Now, not when the timer fired: a tone burst may have run
			// in between, and the SR's times must be of its sending.
			rp.send(time.Now(), false)
			reports.Reset(reportInterval(s.e.rtcpEvery))
		}
	}
}
