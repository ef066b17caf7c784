package engine

import (
	"fmt"

	"callgrid.dev/services/media/internal/sdpneg"
)

// answeredCodecs checks an endpoint's answer against the offer the node
// made it, ours, and returns the answer's audio formats that the offer
// had, in the answer's order (its preference) and each once. The first
// answer to the node's offer to the callee and an answer to a re-offer
// the node made in-dialog go through it alike.
//
// RFC 3264 §6: the answer has as many m-lines as the offer, in the same
// order, so each answers the offer's stream at its place; the audio
// stream the node uses must be the one it offered. §6.1: the answerer
// picks from the formats offered. A format the offer did not have is left
// out, not used, as a relay that never sends it loses nothing by it; an
// answer with none offered is refused. Its direction is not refused here:
// it is kept within the offer's where it is applied (sdpneg.Direction
// Within), so that an answerer's slip does not fail the call.
func answeredCodecs(ours []byte, answer *sdpneg.Description) ([]sdpneg.Codec, error) {
	offer, err := sdpneg.Parse(ours)
	if err != nil {
		return nil, fmt.Errorf("the offer it answers: %w", err)
	}
	if len(answer.Media) != len(offer.Media) {
		return nil, fmt.Errorf("%w: answer has %d m-lines, the offer %d", ErrBadSDP, len(answer.Media), len(offer.Media))
	}
	for i, m := range answer.Media {
		if m.Kind != offer.Media[i].Kind {
			return nil, fmt.Errorf("%w: answer's m-line %d is %s, the offer's %s", ErrBadSDP, i, m.Kind, offer.Media[i].Kind)
		}
	}
	if answer.AudioIndex != offer.AudioIndex {
		return nil, fmt.Errorf("%w: answer takes audio on m-line %d, the offer had it on %d", ErrBadSDP, answer.AudioIndex, offer.AudioIndex)
	}
	var answered []sdpneg.Codec
	for _, c := range answer.Audio().Codecs {
		if containsSame(offer.Audio().Codecs, c) && !containsSame(answered, c) {
			answered = append(answered, c)
		}
	}
	if len(answered) == 0 {
		return nil, fmt.Errorf("answer chose nothing offered: %w", ErrUnsupportedCodec)
	}
	return answered, nil
}
