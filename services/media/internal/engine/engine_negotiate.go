package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/quality"
	"callgrid.dev/services/media/internal/sdpneg"
	"callgrid.dev/services/media/internal/udpio"
)

// Offer creates a session from the caller's offer. For ServiceNone it
// returns the offer to send to the callee: this node's address, the
// caller's codecs we support plus those we can transcode to, and DTMF
// events. For a service it answers the caller itself and returns that
// answer. A failed Offer leaves nothing behind.
func (e *Engine) Offer(ctx context.Context, p OfferParams) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.SessionID == "" {
		return nil, errors.New("offer: empty session id")
	}
	if p.Service < ServiceNone || p.Service > ServiceTone {
		return nil, fmt.Errorf("offer session %s: unknown service %d", p.SessionID, p.Service)
	}
	e.mu.Lock()
	closed, existing := e.closed, e.sessions[p.SessionID]
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if existing != nil {
		return existing.repeatOffer(p)
	}

	desc, err := e.parseReachable(p.SDP)
	if err != nil {
		return nil, fmt.Errorf("offer session %s: %w", p.SessionID, err)
	}
	supported := sdpneg.Supported(desc.Audio().Codecs, e.caps)
	if len(supported) == 0 {
		return nil, fmt.Errorf("offer session %s: %w", p.SessionID, ErrUnsupportedCodec)
	}

	s := e.newSession(p)
	legs := 2
	if p.Service.terminates() {
		legs = 1
	}
	for i := range legs {
		pair, err := e.pool.Allocate()
		if err != nil {
			s.release()
			return nil, fmt.Errorf("offer session %s: allocate ports: %w", p.SessionID, err)
		}
		s.legs[i] = newLeg(Leg(i+1), pair, e.advertise, e.cfg.AllowLatching, s.loop, &e.metrics.drops)
	}

	s.mu.Lock()
	var reply []byte
	if p.Service.terminates() {
		reply, err = s.answerCaller(desc, supported)
	} else {
		reply, err = s.offerCallee(desc, supported)
	}
	s.offer, s.offerReply = p.SDP, reply
	s.mu.Unlock()
	if err != nil {
		s.release()
		return nil, fmt.Errorf("offer session %s: %w", p.SessionID, err)
	}

	// Started before it is published, so a session in the table always
	// has its sockets read, and one that loses a race is stopped whole.
	if err := s.start(); err != nil {
		s.stop()
		if errors.Is(err, udpio.ErrLoopClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("offer session %s: %w", p.SessionID, err)
	}
	e.mu.Lock()
	if e.closed || e.sessions[p.SessionID] != nil {
		closed := e.closed
		e.mu.Unlock()
		s.stop()
		if closed {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("offer session %s: %w", p.SessionID, ErrSessionExists)
	}
	e.sessions[p.SessionID] = s
	e.mu.Unlock()
	e.metrics.sessionsStarted.WithLabelValues(p.Service.String()).Inc()
	s.log.Info().Int("port_a", s.legs[0].pair.Port).Msg("media session created")
	return reply, nil
}

// parseReachable parses an endpoint's SDP and checks that the endpoint
// and the node can exchange audio at the addresses each names: an IPv4
// socket cannot reach an IPv6 peer, nor an IPv6-only one an IPv4 peer, and
// a peer cannot send to an advertised address of the other family. A
// dual-stack node (bound to ::) reaches both, but it advertises one
// address: an IPv6-only phone told an IPv4 one cannot send to it, and a
// dual-stack phone sends from its address of that family, which is not
// the one its SDP named, so the source check drops it. A call set up
// anyway would carry audio one way only. An unspecified address (hold)
// is sent nothing and passes.
//
// An a=rtcp address (RFC 3605) is held to the same rule, unless RTCP is
// muxed and goes to the RTP address anyway: the node's RTCP socket is the
// RTP socket's family, and the endpoint's reports come to the advertised
// address from its address of that family. Taking the attribute's port
// with the c= address instead, as a phone that wrote another host would
// not expect, could send the node's reports to a stranger.
func (e *Engine) parseReachable(raw []byte) (*sdpneg.Description, error) {
	desc, err := sdpneg.Parse(raw)
	if err != nil {
		return nil, err
	}
	audio := desc.Audio()
	if err := e.reachable("media", audio.Addr); err != nil { // IPv4-mapped already unmapped by Parse
		return nil, err
	}
	if !audio.RTCPMux {
		if err := e.reachable("rtcp", audio.RTCP.Addr()); err != nil {
			return nil, err
		}
	}
	return desc, nil
}

// reachable checks one address of an endpoint's SDP as parseReachable has
// it; what names the kind of address for the error.
func (e *Engine) reachable(what string, peer netip.Addr) error {
	dualStack := e.bind.Is6() && e.bind.IsUnspecified()
	switch {
	case !peer.IsValid() || peer.IsUnspecified():
	case !dualStack && peer.Is4() != e.bind.Is4():
		return fmt.Errorf("%s address %s unreachable from %s: %w", what, peer, e.bind, ErrUnsupportedCodec)
	case peer.Is4() != e.advertise.Is4():
		return fmt.Errorf("%s address %s cannot send to advertised %s: %w", what, peer, e.advertise, ErrUnsupportedCodec)
	}
	return nil
}

// repeatOffer answers a retried offer with the same reply.
func (s *session) repeatOffer(p OfferParams) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Service != s.service || !bytes.Equal(p.SDP, s.offer) {
		return nil, fmt.Errorf("offer session %s: %w", p.SessionID, ErrSessionExists)
	}
	return s.offerReply, nil
}

// Answer applies the callee's answer and returns the answer for the caller.
// The callee's preferred codec among those offered is used on both legs
// when the caller offered it too; otherwise the call is transcoded. It may
// be called again (a 183 then a 200 with different SDP); a repeat of the
// same SDP returns the same reply. A provisional answer (early media) sets
// up the media path; only the final one starts the media timeout, since a
// callee may ring without a sound for as long as it likes.
func (e *Engine) Answer(ctx context.Context, sessionID string, sdpB []byte, provisional bool) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s, err := e.lookup(sessionID)
	if err != nil {
		return nil, false, fmt.Errorf("answer: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.service.terminates() {
		return nil, false, fmt.Errorf("answer session %s: %w", sessionID, ErrBadLeg)
	}
	if s.answer != nil && bytes.Equal(s.answer, sdpB) {
		if !provisional {
			s.establish()
		}
		return s.answerReply, s.transcoding, nil
	}
	desc, err := e.parseReachable(sdpB)
	if err != nil {
		return nil, false, fmt.Errorf("answer session %s: %w", sessionID, err)
	}
	a, b := s.legs[0], s.legs[1]
	answered, err := answeredCodecs(b.offer, desc)
	if err != nil {
		return nil, false, fmt.Errorf("answer session %s: %w", sessionID, err)
	}
	chosen := answered[0]
	aCodec := pickCodec(sdpneg.Supported(a.desc.Audio().Codecs, e.caps), chosen)

	b.answerDesc, b.answerCodecs = desc, answered
	b.setDescription(desc, chosen, e)
	a.setDescription(a.desc, aCodec, e)
	if err := s.reroute(); err != nil {
		return nil, false, fmt.Errorf("answer session %s: %w", sessionID, err)
	}
	if !provisional {
		s.establish()
	}

	reply, err := a.builder.Build(a.localSDP(desc.Audio().Direction.Within(a.desc.Audio().Direction), b, false, e))
	if err != nil {
		return nil, false, fmt.Errorf("answer session %s: %w", sessionID, err)
	}
	a.inForce, b.inForce = reply, b.offer
	s.answer, s.answerReply = sdpB, reply
	s.log.Info().Str("codec_a", a.codec.Name).Str("codec_b", b.codec.Name).Bool("transcoding", s.transcoding).Msg("media session answered")
	return reply, s.transcoding, nil
}

// establish starts the media timeout of a bridged call, once, at its final
// answer: A gets a full timeout from here however long B rang (B's starts
// at its answer's SDP). The caller holds s.mu.
func (s *session) establish() {
	if s.established.Load() {
		return
	}
	s.legs[0].lastRx.Store(int64(s.e.now()))
	s.established.Store(true)
}

// Update applies new SDP from one leg's endpoint and returns the SDP for
// the other leg's endpoint (for a service session, the answer to leg A)
// and whether the session now transcodes. The SDP is an offer (a
// re-INVITE or UPDATE: new address, codec or direction such as hold), or,
// with answer set, the answer to the other leg's last offer, which the SDP
// returned keeps to (RFC 3264 §6.1: a far end that answered a hold with
// sendrecv does not make the node answer so). The session keeps running
// throughout.
func (e *Engine) Update(ctx context.Context, sessionID string, which Leg, sdp []byte, answer bool) (out []byte, transcoding bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s, err := e.lookup(sessionID)
	if err != nil {
		return nil, false, fmt.Errorf("update: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if which != LegA && which != LegB {
		return nil, false, fmt.Errorf("update session %s leg %v: %w", sessionID, which, ErrBadLeg)
	}
	l := s.legs[which.index()]
	if l == nil || l.desc == nil {
		return nil, false, fmt.Errorf("update session %s leg %v: %w", sessionID, which, ErrBadLeg)
	}
	if p := s.pending[1-which.index()]; answer && p != nil {
		// An answer the node refuses leaves the offerer's re-INVITE owed
		// one, which Rollback then makes; the last answer tells (a 183's
		// refused, then the 2xx's taken, owes none).
		defer func() { p.answerRefused = err != nil }()
	}
	desc, err := e.parseReachable(sdp)
	if err != nil {
		return nil, false, fmt.Errorf("update session %s: %w", sessionID, err)
	}
	codecs := desc.Audio().Codecs
	if answer && l.offer != nil {
		// An answer to the node's own re-offer is held to that offer,
		// as the first answer is to the node's first.
		if codecs, err = answeredCodecs(l.offer, desc); err != nil {
			return nil, false, fmt.Errorf("update session %s leg %v: %w", sessionID, which, err)
		}
	}
	supported := sdpneg.Supported(codecs, e.caps)
	if len(supported) == 0 {
		return nil, false, fmt.Errorf("update session %s: %w", sessionID, ErrUnsupportedCodec)
	}
	// Keep the codec in use if still offered; otherwise prefer the other
	// leg's codec (no transcoding), then the endpoint's first choice.
	other := s.legs[1-which.index()]
	if !s.service.terminates() && (other == nil || other.desc == nil) {
		return nil, false, fmt.Errorf("update session %s before answer: %w", sessionID, ErrBadLeg)
	}
	chosen, kept := pickSame(supported, l.codec)
	if !kept && other != nil {
		chosen = pickCodec(supported, other.codec)
	}
	if s.service.terminates() {
		l.setDescription(desc, chosen, e)
		if err := s.routeService(); err != nil {
			return nil, false, fmt.Errorf("update session %s: %w", sessionID, err)
		}
		out, err := l.builder.Build(l.localSDP(desc.Audio().Direction.Answer(), nil, false, e))
		if err == nil {
			l.inForce = out
		}
		return out, s.transcoding, err
	}
	dir := desc.Audio().Direction
	if answer {
		// The other leg's last SDP is the offer this answers.
		dir = dir.Within(other.desc.Audio().Direction)
		if p := s.pending[other.side.index()]; p != nil && p.answerer == nil {
			before := l.state()
			p.answerer = &before // a 183's answer, undone too if a 488 follows
		}
	} else {
		s.pending[which.index()] = &pendingOffer{offerer: l.state(), otherTold: sdpneg.Direction(other.told.Load()), offer: desc}
	}
	l.setDescription(desc, chosen, e)
	if err := s.reroute(); err != nil {
		return nil, false, fmt.Errorf("update session %s: %w", sessionID, err)
	}
	s.log.Info().Stringer("leg", which).Bool("answer", answer).Stringer("direction", desc.Audio().Direction).Str("codec", l.codec.Name).Msg("media session updated")
	out, err = other.builder.Build(other.localSDP(dir, l, !answer, e))
	switch {
	case err != nil:
	case answer:
		// l took the offer the node sent it, and other is answered.
		l.inForce, other.inForce = l.offer, out
	default:
		other.offer = out
	}
	return out, s.transcoding, err
}

// Rollback undoes the pending offer from leg which, rejected: RFC 3264 §8
// keeps the session as it was. The other leg goes back to the SDP it had
// and the direction it was told before the offer. Each leg's offer is
// undone on its own, so when both cross (glare) and both are rejected the
// session is back where it started. Without such an offer it changes
// nothing. It returns the node's SDP for the leg, and whether the session
// transcodes.
//
// When the far side rejected the offer (a 488 or 491 to the re-INVITE),
// the offering leg goes back to its SDP and codec before it too, and the
// SDP returned is the one in force for it (leg.inForce), nil if none.
//
// When the node refused the far side's answer, the leg's re-INVITE is
// still owed an answer, and the SDP returned is one to its offer (RFC
// 3264 §6: its m-lines in order, all but the audio one rejected; §6.1:
// a direction within the offer's; a codec offered). The node anchors
// both legs, so it answers the offering leg on its own while the other
// keeps its media as it was: the codec of the other leg if offered (the
// legs relay), else one the node transcodes to it, which the offering leg
// then uses. The SDP in force, or the last built, is returned unchanged,
// version and all, when the answer's content is the same. If no offered
// codec can be used, the leg goes back as for a rejection and the error
// wraps ErrUnsupportedCodec.
func (e *Engine) Rollback(ctx context.Context, sessionID string, which Leg) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s, err := e.lookup(sessionID)
	if err != nil {
		return nil, false, fmt.Errorf("rollback: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if which != LegA && which != LegB || s.legs[which.index()] == nil {
		return nil, s.transcoding, nil
	}
	l := s.legs[which.index()]
	if s.service.terminates() || s.pending[which.index()] == nil {
		return l.inForce, s.transcoding, nil
	}
	p := s.pending[which.index()]
	s.pending[which.index()] = nil
	other := s.legs[1-which.index()]
	if p.answerer != nil {
		other.restore(*p.answerer, e)
	}
	other.told.Store(int32(p.otherTold))
	if p.answerRefused {
		out, err := s.answerOnItsOwn(l, other, p)
		if err != nil {
			return nil, s.transcoding, fmt.Errorf("rollback session %s: %w", sessionID, err)
		}
		s.log.Info().Stringer("leg", which).Str("codec", l.codec.Name).Bool("transcoding", s.transcoding).Msg("media session offer answered by the node, far leg kept")
		return out, s.transcoding, nil
	}
	l.restore(p.offerer, e)
	if err := s.reroute(); err != nil {
		return nil, s.transcoding, fmt.Errorf("rollback session %s: %w", sessionID, err)
	}
	s.log.Info().Stringer("leg", which).Msg("media session offer rolled back")
	return l.inForce, s.transcoding, nil
}

// answerOnItsOwn answers l's pending offer p without the other leg, whose
// media stays as it is, and applies it to l (see Rollback). If none of the
// codecs offered can be used, l goes back to its state before the offer.
// The caller holds s.mu.
func (s *session) answerOnItsOwn(l, other *leg, p *pendingOffer) ([]byte, error) {
	e := s.e
	supported := sdpneg.Supported(p.offer.Audio().Codecs, e.caps)
	// The other leg's codec first, for relaying; then the offering leg's
	// own before the offer, whose transcoder is there already; then any.
	var candidates []sdpneg.Codec
	for _, want := range []sdpneg.Codec{other.codec, p.offerer.codec} {
		if c, ok := findSame(supported, want); ok && !containsSame(candidates, c) {
			candidates = append(candidates, c)
		}
	}
	for _, c := range supported {
		if !containsSame(candidates, c) {
			candidates = append(candidates, c)
		}
	}
	var routeErr error
	for _, c := range candidates {
		l.setDescription(p.offer, c, e)
		if routeErr = s.reroute(); routeErr != nil {
			continue
		}
		// The node relays what the other leg sends and receives: it
		// answers within that, as the other leg would (RFC 3264 §6.1).
		dir := other.desc.Audio().Direction
		if op := other.peer.Load(); op != nil {
			dir = other.direction(op)
		}
		out, err := l.builder.BuildKeeping(l.localSDP(dir.Within(p.offer.Audio().Direction), other, false, e), p.offerer.inForce)
		if err != nil {
			return nil, err
		}
		l.inForce = out
		return out, nil
	}
	l.restore(p.offerer, e)
	if err := s.reroute(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no codec offered can be used with the far leg's %s (%v): %w", other.codec.Name, routeErr, ErrUnsupportedCodec)
}

// Delete ends a session and returns its quality.
func (e *Engine) Delete(sessionID string) (Quality, error) {
	s, err := e.lookup(sessionID)
	if err != nil {
		// A media timeout ending it at this moment: the call ends either
		// way, and its quality is the same.
		if q, ok := e.expiringQuality(sessionID); ok {
			return q, nil
		}
		return Quality{}, fmt.Errorf("delete: %w", err)
	}
	if !e.remove(s) {
		return Quality{}, fmt.Errorf("delete session %s: %w", sessionID, ErrUnknownSession)
	}
	return e.finish(s, "deleted"), nil
}

// offerCallee prepares the bridge and returns the offer for leg B.
func (s *session) offerCallee(desc *sdpneg.Description, supported []sdpneg.Codec) ([]byte, error) {
	a, b := s.legs[0], s.legs[1]
	a.setDescription(desc, supported[0], s.e)
	s.dirs[0] = newDirection(a, b, true)
	s.dirs[1] = newDirection(b, a, true)

	audio := desc.Audio()
	used := map[uint8]bool{}
	for _, f := range audio.Formats {
		var pt int
		if _, err := fmt.Sscanf(f, "%d", &pt); err == nil && pt >= 0 && pt < 128 {
			used[uint8(pt)] = true
		}
	}
	offer := append([]sdpneg.Codec(nil), supported...)
	for _, name := range s.e.cfg.Codecs {
		info, _ := codec.Lookup(string(name))
		if containsCodec(offer, info) {
			continue
		}
		pt, ok := freePT(used, info.StaticPT)
		if !ok {
			break
		}
		offer = append(offer, sdpneg.Codec{PT: pt, Name: string(info.Name), ClockRate: info.ClockRate, Channels: info.Channels, Fmtp: defaultFmtp(info, s.e.cfg.Opus)})
	}
	var events []sdpneg.Codec
	if len(audio.TelephoneEvents) > 0 {
		for _, c := range offer {
			if _, dup := findEvent(events, c.ClockRate); dup {
				continue
			}
			te, ok := audio.TelephoneEvent(c.ClockRate)
			if !ok {
				pt, free := freePT(used, codec.DynamicPT)
				if !free {
					continue
				}
				te = sdpneg.Codec{PT: pt, Name: sdpneg.TelephoneEvent, ClockRate: c.ClockRate, Channels: 1, Fmtp: "0-16"}
			}
			events = append(events, te)
		}
	}
	b.offered, b.offeredEvents = offer, events
	b.told.Store(int32(audio.Direction))
	out, err := b.builder.Build(sdpneg.Local{
		Addr:            b.local.Addr(),
		Port:            int(b.local.Port()),
		Codecs:          offer,
		TelephoneEvents: events,
		Direction:       audio.Direction,
		RTCPMux:         audio.RTCPMux,
		// Passed on as the far end asked: see localSDP.
		Ptime:    audio.Ptime,
		MaxPtime: audio.MaxPtime,
	})
	b.offer = out
	return out, err
}

// answerCaller sets up a service session and returns its answer to leg A.
func (s *session) answerCaller(desc *sdpneg.Description, supported []sdpneg.Codec) ([]byte, error) {
	a := s.legs[0]
	a.setDescription(desc, supported[0], s.e)
	if s.service == ServiceEcho {
		// Echoed packets get our own SSRC: a phone receiving its own SSRC
		// back takes it for a loop or an SSRC collision.
		s.dirs[0] = newDirection(a, a, false)
	} else {
		s.dirs[0] = newDirection(a, nil, false)
	}
	if err := s.routeService(); err != nil {
		return nil, err
	}
	s.established.Store(true)
	out, err := a.builder.Build(a.localSDP(desc.Audio().Direction.Answer(), nil, false, s.e))
	a.inForce = out
	return out, err
}

// pendingOffer is what an in-dialog offer changed: the offering leg, the
// direction the node then told the other leg, and the other leg if an
// answer to it (a provisional one, before a rejection) was applied. It
// stays until the leg offers again or the offer is rolled back: a later
// answer to the same offer finds it still there.
type pendingOffer struct {
	offerer   legState
	otherTold sdpneg.Direction
	answerer  *legState
	// offer is the offering leg's SDP. answerRefused is set when the node
	// refused an answer to it: the offerer is then owed one, which
	// Rollback makes.
	offer         *sdpneg.Description
	answerRefused bool
}

// legState is what an offer and its answer change on a leg: the
// endpoint's SDP and codec, the direction it is told, and the node's SDP
// in force for it, which an answer replaces (an early one too).
type legState struct {
	desc    *sdpneg.Description
	codec   sdpneg.Codec
	told    sdpneg.Direction
	inForce []byte
}

func (l *leg) state() legState {
	return legState{desc: l.desc, codec: l.codec, told: sdpneg.Direction(l.told.Load()), inForce: l.inForce}
}

// restore puts a leg back as st recorded it.
func (l *leg) restore(st legState, e *Engine) {
	l.setDescription(st.desc, st.codec, e)
	l.told.Store(int32(st.told))
	l.inForce = st.inForce
}

// setDescription records an endpoint's SDP and the codec chosen for it.
func (l *leg) setDescription(desc *sdpneg.Description, c sdpneg.Codec, e *Engine) {
	info, _ := codec.Lookup(c.Name)
	clockChanged := l.info.ClockRate != info.ClockRate
	l.desc, l.codec, l.info = desc, c, info
	l.event, l.hasEvent = desc.Audio().TelephoneEvent(info.ClockRate)
	if !l.hasEvent && len(desc.Audio().TelephoneEvents) > 0 {
		l.event, l.hasEvent = desc.Audio().TelephoneEvents[0], true
	}
	if old := l.rx.Load(); old == nil || clockChanged {
		// A receiver measures jitter at one clock; the one replaced keeps
		// its share of the call's loss for the figures at the end.
		if old != nil {
			l.rxRetired = l.rxRetired.plus(old.Current())
		}
		l.rx.Store(quality.NewReceiver(info.ClockRate))
	}
	l.metrics.Store(e.metrics.forCodec(string(info.Name), l.shard))
	if desc != l.peerDesc {
		// Only new SDP moves the peer and restarts latching; choosing a
		// codec for SDP already applied keeps the latch in place.
		l.peerDesc = desc
		l.setPeer(desc.Audio(), e.now())
	}
}

// localSDP is our SDP for this leg: the codec in use numbered as the
// endpoint numbers it, its DTMF format when events can be carried, and
// mirroring its last SDP's m-lines. far is the leg bridged to it, nil when
// the node itself terminates the leg's stream (a service); offer tells a
// re-offer to the endpoint from an answer to its own offer.
//
// An answer promises a DTMF format only when both endpoints have one: an
// event format promised to a phone that the far end cannot take would
// swallow its digits. A re-offer carries one whenever the far end's SDP
// it is made for has one, even if the endpoint's last SDP had none: a
// round that dropped telephone-event does not rule it out for good, RFC
// 3264 §8.3.2 lets a re-offer bring a format back.
//
// Format parameters are declarative, each a wish or a promise of the SDP's
// writer as receiver or sender (RFC 7587 §6.1, §7.1), so they are those of
// whoever decodes what the endpoint sends. When the legs carry the same
// codec that is the far end, whose packets the node passes on as they
// are; when transcoding it is the node, and they are the node's own. A
// DTMF format's events list is the far end's either way: the node passes
// events on one for one, only restamped to the far end's clock. A service
// keeps the endpoint's own: echo sends it its own stream back.
//
// Its a=ptime and a=maxptime are those of the far end's stream (for a
// service, the endpoint's own), passed on as rtpengine passes them. A
// relayed packet reaches the far end as the endpoint sent it, so the far
// end's wish and limit are what the endpoint's packets must meet; and a
// call can turn from relayed to transcoded and back (a codec switch) with
// no new SDP, so what the endpoint is told must hold either way. When
// transcoding, the node decodes packets of any length, so passing the far
// end's on costs nothing, and what the node sends the endpoint follows
// the endpoint's own a=ptime and a=maxptime (packetTimeFor). None of the
// node's own are added: told none, an endpoint sends its usual packets,
// which a far end that asked for none takes.
func (l *leg) localSDP(dir sdpneg.Direction, far *leg, offer bool, e *Engine) sdpneg.Local {
	l.told.Store(int32(dir))
	asked, declared := l.desc.Audio(), l.codec
	if far != nil {
		asked = far.desc.Audio()
		declared.Fmtp = defaultFmtp(l.info, e.cfg.Opus)
		if far.info.Name == l.info.Name {
			declared.Fmtp = far.codec.Fmtp
		}
	}
	loc := sdpneg.Local{
		Addr:      l.local.Addr(),
		Port:      int(l.local.Port()),
		Codecs:    []sdpneg.Codec{declared},
		Direction: dir,
		RTCPMux:   l.desc.Audio().RTCPMux,
		Ptime:     asked.Ptime,
		MaxPtime:  asked.MaxPtime,
		Mirror:    l.desc,
	}
	switch {
	case far == nil:
		if l.hasEvent {
			loc.TelephoneEvents = []sdpneg.Codec{l.event}
		}
	case far.hasEvent && (l.hasEvent || offer):
		te := l.eventToDeclare()
		te.Fmtp = far.event.Fmtp
		loc.TelephoneEvents = []sdpneg.Codec{te}
	}
	return loc
}

// eventToDeclare is the telephone-event format to put in SDP for the leg:
// the endpoint's own if its last SDP had one, else one the node offered it
// before at its codec's clock, else a new one on a payload type its last
// SDP leaves free.
func (l *leg) eventToDeclare() sdpneg.Codec {
	if l.hasEvent {
		return l.event
	}
	if te, ok := l.offeredEvent(l.info.ClockRate); ok {
		return te
	}
	used := map[uint8]bool{l.codec.PT: true}
	for _, f := range l.desc.Audio().Formats {
		if pt, err := strconv.Atoi(f); err == nil && pt >= 0 && pt < 128 {
			used[uint8(pt)] = true
		}
	}
	pt, _ := freePT(used, codec.DynamicPT) // an SDP's one audio codec leaves dynamic types free
	return sdpneg.Codec{PT: pt, Name: sdpneg.TelephoneEvent, ClockRate: l.info.ClockRate, Channels: 1}
}

// offeredEvent is the telephone-event format we offered this leg at clock.
func (l *leg) offeredEvent(clock int) (sdpneg.Codec, bool) {
	return findEvent(l.offeredEvents, clock)
}

// reroute rebuilds both directions of a bridge from the legs' codecs.
func (s *session) reroute() error {
	a, b := s.legs[0], s.legs[1]
	ab, err := s.routeFor(s.dirs[0], a, b)
	if err != nil {
		return err
	}
	ba, err := s.routeFor(s.dirs[1], b, a)
	if err != nil {
		return err
	}
	s.dirs[0].route.Store(ab)
	s.dirs[1].route.Store(ba)
	s.setTranscoding(ab.mode == routeTranscode)
	return nil
}

// setTranscoding records whether the bridge transcodes, and tells the
// transcoding handler when that changed. Every change goes through here
// with s.mu held, so the handler hears of them one at a time and in the
// order they were made, and the last it heard is what the session does:
// whoever keeps count by it (the node's capacity ledger) ends up right
// however a negotiation and a codec switch interleave.
func (s *session) setTranscoding(on bool) {
	if on == s.transcoding {
		return
	}
	s.transcoding = on
	if s.e.onTranscoding != nil {
		s.e.onTranscoding(s.id, on)
	}
}

// routeService builds leg A's route for echo or tone.
func (s *session) routeService() error {
	a := s.legs[0]
	r := &route{mode: routeSink, inClock: a.info.ClockRate, outClock: a.info.ClockRate}
	r.kinds[a.codec.PT] = ptAudio
	if a.hasEvent {
		r.kinds[a.event.PT] = ptEvent
		r.eventPT = a.event.PT
		r.inEventClock, r.outEventClock = a.event.ClockRate, a.event.ClockRate
	}
	if s.service == ServiceEcho {
		r.mode = routePassthrough
		r.audioPT = a.codec.PT
	} else {
		audio := a.desc.Audio()
		every := packetTimeFor(a.info, audio.Ptime, audio.MaxPtime)
		opts := encoderOptions(s.e.cfg.Opus, a)
		cur := s.tone.Load()
		switch {
		case cur == nil || cur.info.Name != a.info.Name || cur.pt != a.codec.PT || cur.packetTime != every:
			t, err := newToneSource(a.info, a.codec.PT, every, opts)
			if err != nil {
				return err
			}
			s.replaceTone(t)
		case cur.opus != opts:
			// Only the caller's fmtp changed: the tone plays on, its
			// encoder set to the new options.
			if err := s.reconfigureTone(cur, opts); err != nil {
				return err
			}
		}
	}
	s.dirs[0].route.Store(r)
	return nil
}

// routeFor plans one bridge direction. An unchanged transcoder is kept so a
// hold or address change does not reset the codec state.
func (s *session) routeFor(d *direction, from, to *leg) (*route, error) {
	r := &route{
		audioPT:  to.codec.PT,
		inClock:  from.info.ClockRate,
		outClock: to.info.ClockRate,
	}
	r.kinds[from.codec.PT] = ptAudio
	if from.answerDesc != nil && from.desc == from.answerDesc {
		// While its answer to our offer is in force, the endpoint may
		// send the codec in use numbered as we offered it, and any other
		// codec of its answer. Both follow the codec in use: what a
		// re-negotiation replaced must not be taken for the new codec.
		if ours, ok := findSame(from.offered, from.codec); ok && r.kinds[ours.PT] == ptUnknown {
			r.kinds[ours.PT] = ptAudio
		}
		if te, ok := from.offeredEvent(from.info.ClockRate); ok && from.hasEvent && r.kinds[te.PT] == ptUnknown {
			r.kinds[te.PT] = ptEvent
		}
		for _, c := range from.answerCodecs {
			if r.kinds[c.PT] == ptUnknown && !c.Same(from.codec) {
				r.kinds[c.PT] = ptSwitch
			}
		}
	}
	if from.hasEvent && to.hasEvent {
		r.kinds[from.event.PT] = ptEvent
		r.eventPT = to.event.PT
		r.inEventClock, r.outEventClock = from.event.ClockRate, to.event.ClockRate
	} else {
		for pt, kind := range r.kinds {
			if kind == ptEvent {
				r.kinds[pt] = ptUnknown
			}
		}
	}
	if from.info.Name == to.info.Name {
		r.mode = routePassthrough
		return r, nil
	}
	r.mode = routeTranscode
	asked := to.desc.Audio()
	r.packetTime = packetTimeFor(to.info, asked.Ptime, asked.MaxPtime)
	// A transcoder is kept for each pair of codecs a direction has used,
	// so a hold or an address change does not reset the codec state, and
	// an endpoint switching codecs back and forth, or changing its fmtp,
	// does not make the session allocate without end. The encoder's
	// settings go with the route: the reader, which owns the transcoder,
	// reconfigures a kept one when it takes the route up (adopt), as it
	// does the packet time.
	opts := encoderOptions(s.e.cfg.Opus, to)
	r.opus = opts
	key := transcoderKey{dir: d, from: from.info.Name, to: to.info.Name}
	if tc, ok := s.transcoders[key]; ok {
		r.tc = tc
		return r, nil
	}
	tc, err := newTranscoder(from.info, to.info, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedCodec, err)
	}
	tc.setTimerOn(s.e.loops.At(s.loop), from.pair.RTP, d, s.e.talkspurtGrace)
	s.closers = append(s.closers, tc.close)
	if s.transcoders == nil {
		s.transcoders = map[transcoderKey]*transcoder{}
	}
	s.transcoders[key] = tc
	r.tc = tc
	return r, nil
}

// pickCodec returns the codec in list that is the same as want, else the
// list's first.
func pickCodec(list []sdpneg.Codec, want sdpneg.Codec) sdpneg.Codec {
	if c, ok := pickSame(list, want); ok {
		return c
	}
	return list[0]
}

func pickSame(list []sdpneg.Codec, want sdpneg.Codec) (sdpneg.Codec, bool) {
	for _, c := range list {
		if c.Same(want) {
			return c, true
		}
	}
	return list[0], false
}

func containsSame(list []sdpneg.Codec, c sdpneg.Codec) bool {
	_, ok := findSame(list, c)
	return ok
}

// findSame is the codec in list that is the same as c, if any.
func findSame(list []sdpneg.Codec, c sdpneg.Codec) (sdpneg.Codec, bool) {
	for _, o := range list {
		if o.Same(c) {
			return o, true
		}
	}
	return sdpneg.Codec{}, false
}

func containsCodec(list []sdpneg.Codec, info codec.Info) bool {
	for _, c := range list {
		if strings.EqualFold(c.Name, string(info.Name)) && c.ClockRate == info.ClockRate {
			return true
		}
	}
	return false
}

func findEvent(list []sdpneg.Codec, clock int) (sdpneg.Codec, bool) {
	for _, c := range list {
		if c.ClockRate == clock {
			return c, true
		}
	}
	return sdpneg.Codec{}, false
}

// freePT returns the static payload type if it is free, else the first
// free dynamic one, and marks it used.
func freePT(used map[uint8]bool, static int) (uint8, bool) {
	if static >= 0 && static < 96 && !used[uint8(static)] {
		used[uint8(static)] = true
		return uint8(static), true
	}
	for pt := uint8(96); pt < 128; pt++ {
		if !used[pt] {
			used[pt] = true
			return pt, true
		}
	}
	return 0, false
}

// encoderOptions are the node's Opus settings, own, as the endpoint of leg
// to, which decodes what the node encodes, allows them (RFC 7587 §6.1):
// its fmtp caps the bitrate, bandwidth, FEC and DTX and may ask for a
// constant bitrate. Another codec takes none of them, and gets own
// unchanged.
func encoderOptions(own codec.OpusOptions, to *leg) codec.OpusOptions {
	if to.info.Name != codec.Opus {
		return own
	}
	return own.ForReceiver(to.codec.Fmtp)
}

// defaultFmtp is what we add to a codec we offer on our own account.
func defaultFmtp(info codec.Info, opus codec.OpusOptions) string {
	if info.Name != codec.Opus {
		return ""
	}
	if opus.FEC {
		return "minptime=10;useinbandfec=1"
	}
	return "minptime=10"
}
