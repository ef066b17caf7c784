package node

import (
	"context"
	"errors"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// Media is the engine that carries a session's audio. The node layer owns
// capacity and the bus; the engine owns ports, sockets and goroutines.
//
// An engine that changes a session's transcoding on its own (an endpoint
// switching codec) tells the node through Node.HandleTranscodingChange, and
// then tells it of every change, its negotiations' own included: one at a
// time, in the order made, before the call that made one returns. A flag
// a call returns can be overtaken by such a report; the node keeps the
// newer of the two.
type Media interface {
	// Open creates a session for leg A's offer and returns the SDP to send
	// to leg B (or, for a built-in service, the answer for leg A).
	Open(ctx context.Context, p OpenParams) (sdp []byte, err error)
	// Answer applies leg B's answer and returns the answer for leg A, and
	// whether the legs ended up on different codecs. A provisional answer
	// (early media) does not start the media timeout; the final one does.
	// A repeat of the last answer's SDP changes nothing else and returns
	// the same answer with the flag as it is at that moment.
	Answer(ctx context.Context, sessionID string, sdp []byte, provisional bool) (sdpForA []byte, transcoding bool, err error)
	// Update applies an in-dialog offer from one leg to a live session, or
	// with answer set the answer to the other leg's, and returns the SDP for
	// the other leg and whether the legs are now on different codecs.
	Update(ctx context.Context, sessionID string, leg callgridv1.Leg, sdp []byte, answer bool) (out []byte, transcoding bool, err error)
	// Rollback undoes leg's last in-dialog offer and returns the node's
	// SDP for leg and whether the legs are on different codecs. When the
	// other side rejected the offer, leg goes back to the SDP in force
	// before it; when the node refused the other side's answer, the node
	// answers leg's offer itself, the other leg kept as it was.
	Rollback(ctx context.Context, sessionID string, leg callgridv1.Leg) (sdp []byte, transcoding bool, err error)
	// Close ends a session, frees its ports and returns its quality.
	Close(sessionID string) (*callgridv1.MediaQuality, error)
	// Shutdown ends every session.
	Shutdown()
}

// OpenParams describes a new session.
type OpenParams struct {
	SessionID string
	CallID    string
	SDP       []byte
	Service   callgridv1.MediaService
}

// Errors a Media implementation returns (wrapped) so the node can answer
// with the right status.
var (
	ErrBadSDP           = errors.New("bad sdp")
	ErrUnsupportedCodec = errors.New("unsupported codec")
	ErrUnknownSession   = errors.New("unknown session")
	ErrNoPorts          = errors.New("no free rtp ports")
)

// statusOf maps an error from Media to the reply status and its detail.
// It is the one place such errors become statuses.
func statusOf(err error) callgridv1.Status {
	switch {
	case err == nil:
		return callgridv1.Status_STATUS_OK
	case errors.Is(err, ErrBadSDP):
		return callgridv1.Status_STATUS_BAD_SDP
	case errors.Is(err, ErrUnsupportedCodec):
		return callgridv1.Status_STATUS_UNSUPPORTED_CODEC
	case errors.Is(err, ErrUnknownSession):
		return callgridv1.Status_STATUS_UNKNOWN_SESSION
	case errors.Is(err, ErrNoPorts):
		return callgridv1.Status_STATUS_FULL
	default:
		return callgridv1.Status_STATUS_INTERNAL
	}
}
