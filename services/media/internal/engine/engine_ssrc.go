package engine

import (
	"net/netip"
	"time"
)

// conflictMemoryIntervals is how many report intervals an address the
// endpoint's SSRC collided from is remembered: RFC 3550 §8.2 keeps its list
// of conflicting addresses for ten.
const conflictMemoryIntervals = 10

// ssrcConflict is where the last collision with the node's SSRC on a leg
// came from, and when: RFC 3550 §8.2's list of conflicting addresses, of
// the one address a leg accepts RTP from.
type ssrcConflict struct {
	from netip.AddrPort
	at   time.Duration // Engine.now() of it
}

// heardSSRC is an SSRC heard from an endpoint with a bit above its 32 set,
// so that its zero value is none heard yet: RFC 3550 §8 lets a source take
// any 32-bit value, 0 included. Compared whole, it costs a packet no more
// than the bare SSRC would.
type heardSSRC uint64

const ssrcHeardBit heardSSRC = 1 << 32

// heard is ssrc as one heard.
func heard(ssrc uint32) heardSSRC { return ssrcHeardBit | heardSSRC(ssrc) }

// get returns the SSRC, and false when none was heard.
func (h heardSSRC) get() (ssrc uint32, ok bool) { return uint32(h), h&ssrcHeardBit != 0 }

// remote returns the SSRC of the endpoint's stream, and false while the
// leg has not heard from it. Safe from any goroutine.
func (l *leg) remote() (ssrc uint32, ok bool) { return heardSSRC(l.remoteSSRC.Load()).get() }

// avoidCollision gives stream o, which the node sends leg l's endpoint, a
// new SSRC when that endpoint turns out to send with the same one (remote,
// its packets coming from from). RFC 3550 §8.2 has the party that finds
// its own SSRC taken leave with an RTCP BYE for it and go on with a new
// random one. A second collision from the same address within the memory
// is the node's own stream looped back to it, which a new SSRC would only
// be chased by: it is let be.
func (s *session) avoidCollision(l *leg, o *outStream, remote uint32, from netip.AddrPort, now time.Time) {
	if remote != o.ssrc {
		return
	}
	at := stampOf(now)
	if c := l.conflict; from.IsValid() && c.from == from && at-c.at < conflictMemoryIntervals*s.e.rtcpEvery {
		l.conflict.at = at
		s.log.Debug().Stringer("leg", l.side).Uint32("ssrc", remote).Msg("own rtp looped back")
		return
	}
	l.conflict = ssrcConflict{from: from, at: at}
	old := o.renewSSRC(l.sent())
	if o.started {
		// Only an endpoint that was sent the old SSRC is told it left.
		l.sendBye(old, s.e, now)
	}
	s.log.Info().Stringer("leg", l.side).Uint32("old_ssrc", old).Uint32("ssrc", o.ssrc).Msg("ssrc collision: stream renumbered")
}

// streamToSource is the stream the node originates to this direction's
// source endpoint, if it originates one there: echo's, or the other
// direction's of a transcoding bridge. A relay forwards the other
// endpoint's SSRC and originates none; the tone's stream belongs to its
// player, which checks it on the session's clock.
func (d *direction) streamToSource() *outStream {
	s := d.s
	switch {
	case s == nil:
		return nil
	case s.service == ServiceEcho:
		return &d.out
	case s.service.terminates():
		return nil
	}
	back := s.dirs[1-d.from.side.index()]
	if back == nil || back.mode != routeTranscode {
		return nil
	}
	return &back.out
}

// avoidCollisionAhead checks the stream this direction is about to
// originate against the SSRC its destination endpoint already sends with:
// a relay that turns to transcoding keeps the SSRC it relayed, which may
// be the endpoint's own.
func (d *direction) avoidCollisionAhead(now time.Time) {
	if d.s == nil || d.to == nil {
		return
	}
	if remote, ok := d.to.remote(); ok {
		d.s.avoidCollision(d.to, &d.out, remote, d.to.rtpSource(), now)
	}
}

// rtpSource is the address the leg takes its endpoint's RTP from: the one
// latched onto, else the signalled one. Safe from any goroutine.
func (l *leg) rtpSource() netip.AddrPort {
	p := l.peer.Load()
	if p == nil {
		return netip.AddrPort{}
	}
	if lt := l.rtpLatch.Load(); lt != nil && lt.of == p {
		return lt.addr
	}
	return p.rtp
}
