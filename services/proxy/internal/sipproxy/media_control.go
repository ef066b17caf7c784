package sipproxy

import (
	"context"
	"errors"
	"fmt"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// The media requests below bound each call by the configured request
// timeout and count it by result, so every caller gets the same deadline
// and the same metric reasons as the SIP answers.

func (s *Server) mediaContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.media.RequestTimeout)
}

func (s *Server) countMedia(op string, err error) {
	result := "ok"
	if err != nil {
		result = classifyStatus(err).reason
	}
	s.m.mediaRequests.WithLabelValues(op, result).Inc()
}

// claim takes a session on some node for an offer.
func (s *Server) claim(req *callgridv1.OfferRequest) (*callgridv1.OfferReply, error) {
	ctx, cancel := s.mediaContext()
	defer cancel()
	reply, err := s.media.Control.Offer(ctx, req)
	s.countMedia("offer", err)
	if err != nil {
		return nil, fmt.Errorf("claim media session %s: %w", req.GetSessionId(), err)
	}
	return reply, nil
}

// answer passes the callee's answer to the session's node: a provisional
// one (18x, early media) or the final one, which starts the node's media
// timeout.
func (s *Server) answer(sess mediaSession, sdp []byte, d *callgridv1.Dialog, provisional bool) (*callgridv1.AnswerReply, error) {
	ctx, cancel := s.mediaContext()
	defer cancel()
	reply, err := s.media.Control.Answer(ctx, sess.node, &callgridv1.AnswerRequest{SessionId: sess.session, Sdp: sdp, Dialog: d, Provisional: provisional})
	s.countMedia("answer", err)
	if err != nil {
		return nil, fmt.Errorf("answer session %s on node %s: %w", sess.session, sess.node, err)
	}
	return reply, nil
}

// update passes one leg's new SDP to the session's node, an offer or the
// answer to the other leg's, and returns the SDP for the other leg.
func (s *Server) update(sess mediaSession, leg callgridv1.Leg, sdp []byte, answer bool) ([]byte, error) {
	var out []byte
	err := s.onSessionNode(sess, func(ctx context.Context, node string) error {
		reply, err := s.media.Control.Update(ctx, node, &callgridv1.UpdateRequest{SessionId: sess.session, Leg: leg, Sdp: sdp, Answer: answer})
		if err == nil {
			out = reply.GetSdp()
		}
		return err
	})
	s.countMedia("update", err)
	if err != nil {
		return nil, fmt.Errorf("update session %s leg %s: %w", sess.session, leg, err)
	}
	return out, nil
}

// rollback tells the session's node that leg's last in-dialog offer was
// rejected, so the node puts the session back as it was before it. It
// returns the SDP the node last sent leg, which answers the offer anew
// when the rejection was the node's own.
func (s *Server) rollback(sess mediaSession, leg callgridv1.Leg) ([]byte, error) {
	var last []byte
	err := s.onSessionNode(sess, func(ctx context.Context, node string) error {
		reply, err := s.media.Control.Update(ctx, node, &callgridv1.UpdateRequest{SessionId: sess.session, Leg: leg, Rollback: true})
		if err == nil {
			last = reply.GetSdp()
		}
		return err
	})
	s.countMedia("rollback", err)
	if err != nil {
		return nil, fmt.Errorf("roll back session %s leg %s: %w", sess.session, leg, err)
	}
	return last, nil
}

// release ends a session; cause is the SIP reason ("bye", "cancel", a
// status code). A session already gone is not an error: both parties may
// hang up at once, or the node timed it out.
func (s *Server) release(sess mediaSession, cause string) error {
	err := s.onSessionNode(sess, func(ctx context.Context, node string) error {
		_, err := s.media.Control.Delete(ctx, node, &callgridv1.DeleteRequest{SessionId: sess.session, Cause: cause})
		return err
	})
	if isUnknownSession(err) {
		err = nil
	}
	s.countMedia("delete", err)
	if err != nil {
		return fmt.Errorf("release session %s: %w", sess.session, err)
	}
	return nil
}

// onSessionNode runs op against the node holding the session. The callee's
// side of a late-offer call does not know the node (it was chosen after
// the callee's route set was fixed), so every live node is asked in turn:
// the ones not holding the session say so and change nothing.
func (s *Server) onSessionNode(sess mediaSession, op func(ctx context.Context, node string) error) error {
	if sess.node != "" {
		ctx, cancel := s.mediaContext()
		defer cancel()
		return op(ctx, sess.node)
	}
	for _, node := range s.media.Nodes() {
		ctx, cancel := s.mediaContext()
		err := op(ctx, node)
		cancel()
		if isUnknownSession(err) || errors.Is(err, bus.ErrNoResponders) || errors.Is(err, bus.ErrTimeout) {
			continue
		}
		return err
	}
	return fmt.Errorf("session %s: %w", sess.session, errSessionNotFound)
}

func isUnknownSession(err error) bool {
	var se *bus.StatusError
	return errors.Is(err, errSessionNotFound) || (errors.As(err, &se) && se.Status == callgridv1.Status_STATUS_UNKNOWN_SESSION)
}

// isRefusedSDP reports a node that refused the SDP itself, which it does
// again for the same SDP, as opposed to a node that could not be asked.
func isRefusedSDP(err error) bool {
	var se *bus.StatusError
	return errors.As(err, &se) && (se.Status == callgridv1.Status_STATUS_BAD_SDP || se.Status == callgridv1.Status_STATUS_UNSUPPORTED_CODEC)
}
