package app

import (
	"context"
	"errors"
	"fmt"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
	"callgrid.dev/services/media/internal/engine"
	"callgrid.dev/services/media/internal/node"
)

// engineMedia lets the control layer drive the RTP engine: it translates
// the bus contract's types and the engine's errors into the node's.
type engineMedia struct {
	eng *engine.Engine
}

var _ node.Media = engineMedia{}

func (m engineMedia) Open(ctx context.Context, p node.OpenParams) ([]byte, error) {
	sdp, err := m.eng.Offer(ctx, engine.OfferParams{SessionID: p.SessionID, CallID: p.CallID, SDP: p.SDP, Service: serviceOf(p.Service)})
	return sdp, classify(err)
}

func (m engineMedia) Answer(ctx context.Context, id string, sdp []byte, provisional bool) ([]byte, bool, error) {
	out, transcoding, err := m.eng.Answer(ctx, id, sdp, provisional)
	return out, transcoding, classify(err)
}

func (m engineMedia) Update(ctx context.Context, id string, leg callgridv1.Leg, sdp []byte, answer bool) ([]byte, bool, error) {
	out, transcoding, err := m.eng.Update(ctx, id, engineLeg(leg), sdp, answer)
	return out, transcoding, classify(err)
}

func (m engineMedia) Rollback(ctx context.Context, id string, leg callgridv1.Leg) ([]byte, bool, error) {
	sdp, transcoding, err := m.eng.Rollback(ctx, id, engineLeg(leg))
	return sdp, transcoding, classify(err)
}

func engineLeg(leg callgridv1.Leg) engine.Leg {
	if leg == callgridv1.Leg_LEG_B {
		return engine.LegB
	}
	return engine.LegA
}

func (m engineMedia) Close(id string) (*callgridv1.MediaQuality, error) {
	q, err := m.eng.Delete(id)
	if err != nil {
		return nil, classify(err)
	}
	return qualityProto(q), nil
}

func (m engineMedia) Shutdown() { m.eng.Close() }

func serviceOf(s callgridv1.MediaService) engine.Service {
	switch s {
	case callgridv1.MediaService_MEDIA_SERVICE_ECHO:
		return engine.ServiceEcho
	case callgridv1.MediaService_MEDIA_SERVICE_TONE:
		return engine.ServiceTone
	default:
		return engine.ServiceNone
	}
}

// classify wraps engine errors in the node's sentinels so the node answers
// with the right status.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, engine.ErrBadSDP):
		return fmt.Errorf("%w: %w", node.ErrBadSDP, err)
	case errors.Is(err, engine.ErrUnsupportedCodec):
		return fmt.Errorf("%w: %w", node.ErrUnsupportedCodec, err)
	case errors.Is(err, engine.ErrUnknownSession), errors.Is(err, engine.ErrBadLeg):
		return fmt.Errorf("%w: %w", node.ErrUnknownSession, err)
	case errors.Is(err, engine.ErrNoPorts):
		return fmt.Errorf("%w: %w", node.ErrNoPorts, err)
	default:
		return err
	}
}

func qualityProto(q engine.Quality) *callgridv1.MediaQuality {
	return &callgridv1.MediaQuality{LegA: legProto(q.Legs[0]), LegB: legProto(q.Legs[1])}
}

func legProto(l engine.LegQuality) *callgridv1.LegQuality {
	return &callgridv1.LegQuality{
		Codec:              l.Codec,
		PacketsReceived:    l.PacketsIn,
		PacketsSent:        l.PacketsOut,
		PacketsLost:        l.Lost,
		Duplicates:         uint64(max(l.Duplicates, 0)),
		Reordered:          uint64(max(l.Reordered, 0)),
		JitterMs:           l.JitterMs,
		Mos:                l.MOS,
		DroppedWrongSource: l.Dropped.WrongSource,
		DroppedMalformed:   l.Dropped.Malformed,
	}
}
