package engine

import (
	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/sdpneg"
)

// transcoderKey names a transcoder a session keeps: one direction, one pair
// of codecs. The encoder's Opus settings are not part of it: they follow
// the destination's fmtp, which a re-INVITE may change as often as it
// likes (RFC 7587 §6.1), so the route carries them and the kept encoder is
// reconfigured to them (transcoder.useOpus) rather than another one built
// and kept for each.
type transcoderKey struct {
	dir      *direction
	from, to codec.Name
}

// loggedSwitches is how many codec switches of a leg are logged, and how
// many refused; an endpoint alternating codecs must not flood the log.
const loggedSwitches = 3

// switchCodec makes the codec of l's answer numbered pt the leg's codec, when
// the endpoint starts sending it: RFC 3264 §6.1 lets an answerer send with
// any codec it listed, and the offerer must be ready to receive each. Both
// directions are rerouted, so that the node also sends the endpoint the
// codec it now sends (passthrough when the other leg has it). It runs on the
// session's event loop; a negotiation holding the session at that moment
// makes it report false, and the packet is dropped rather than the loop
// kept waiting.
func (s *session) switchCodec(l *leg, pt uint8) bool {
	if s == nil || !s.mu.TryLock() {
		return false
	}
	defer s.mu.Unlock()
	if l.answerDesc == nil || l.desc != l.answerDesc {
		return false
	}
	next, ok := codecWithPT(l.answerCodecs, pt)
	if !ok || next.Same(l.codec) {
		return false
	}
	prev := l.codec
	rx, retired := l.rx.Load(), l.rxRetired
	l.setDescription(l.answerDesc, next, s.e)
	if err := s.reroute(); err != nil {
		// Nothing was rerouted. The leg goes back as it was, receive
		// statistics included, and the codec is no longer followed: an
		// endpoint that goes on sending it must not cost a failed codec
		// set-up and a log line on every packet.
		l.setDescription(l.answerDesc, prev, s.e)
		l.rx.Store(rx)
		l.rxRetired = retired
		l.answerCodecs = withoutSame(l.answerCodecs, next)
		if err := s.reroute(); err != nil {
			s.log.Error().Err(err).Msg("restore route after a failed codec switch")
		}
		l.refusals++
		if l.refusals <= loggedSwitches {
			s.log.Warn().Err(err).Stringer("leg", l.side).Str("codec", next.Name).Msg("codec switch refused")
		}
		return false
	}
	l.switches++
	if l.switches <= loggedSwitches {
		s.log.Info().Stringer("leg", l.side).Str("from", prev.Name).Str("to", next.Name).Bool("transcoding", s.transcoding).Msg("endpoint switched codec")
	}
	s.e.metrics.codecSwitches.Inc()
	return true
}

// withoutSame is list without the codecs that are the same as c, in a new
// slice: list may be shared.
func withoutSame(list []sdpneg.Codec, c sdpneg.Codec) []sdpneg.Codec {
	out := make([]sdpneg.Codec, 0, len(list))
	for _, o := range list {
		if !o.Same(c) {
			out = append(out, o)
		}
	}
	return out
}

func codecWithPT(list []sdpneg.Codec, pt uint8) (sdpneg.Codec, bool) {
	for _, c := range list {
		if c.PT == pt {
			return c, true
		}
	}
	return sdpneg.Codec{}, false
}
