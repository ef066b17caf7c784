package node

import (
	"context"
	"errors"
	"time"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

func (n *Node) handleOffer(ctx context.Context, req *callgridv1.OfferRequest) *callgridv1.OfferReply {
	reject := func(s callgridv1.Status, detail string) *callgridv1.OfferReply {
		n.metrics.offers.WithLabelValues(s.String()).Inc()
		return &callgridv1.OfferReply{Status: s, Detail: detail, NodeId: n.cfg.ID}
	}
	if ctx.Err() != nil {
		return reject(callgridv1.Status_STATUS_INTERNAL, errDeadline.Error())
	}
	if len(req.GetSdp()) == 0 {
		return reject(callgridv1.Status_STATUS_BAD_SDP, "offer carries no sdp")
	}
	if req.GetSessionId() == "" {
		req.SessionId = fleet.NewSessionID()
	} else if err := bus.ValidateToken(req.GetSessionId()); err != nil {
		return reject(callgridv1.Status_STATUS_BAD_REQUEST, "session_id: "+err.Error())
	}
	service := req.GetService()
	if service == callgridv1.MediaService_MEDIA_SERVICE_UNSPECIFIED {
		service = callgridv1.MediaService_MEDIA_SERVICE_BRIDGE
	}
	if _, known := callgridv1.MediaService_name[int32(service)]; !known {
		return reject(callgridv1.Status_STATUS_BAD_REQUEST, "unknown media service")
	}

	s := &session{id: req.GetSessionId(), callID: req.GetCallId(), units: n.cfg.PassthroughCost, dialog: req.GetDialog(), created: time.Now()}
	outcome, existing := n.ledger.reserve(s)
	switch outcome {
	case reserveExists:
		// A retried offer: answer it again rather than claim twice.
		if existing.state != stateOpen || existing.callID != req.GetCallId() {
			return reject(callgridv1.Status_STATUS_BAD_REQUEST, "session id already in use")
		}
		n.metrics.offers.WithLabelValues(callgridv1.Status_STATUS_OK.String()).Inc()
		return &callgridv1.OfferReply{Status: callgridv1.Status_STATUS_OK, SessionId: existing.id, NodeId: n.cfg.ID, Sdp: existing.offerSDP}
	case reserveDraining:
		return reject(callgridv1.Status_STATUS_DRAINING, "node is draining")
	case reserveFull:
		return reject(callgridv1.Status_STATUS_FULL, "no free capacity units")
	}

	log := n.log.With().Str("call_id", s.callID).Str("session_id", s.id).Logger()
	sdp, err := n.openMedia(ctx, OpenParams{SessionID: s.id, CallID: s.callID, SDP: req.GetSdp(), Service: service})
	if err != nil {
		n.ledger.drop(s.id)
		status := statusOf(err)
		log.Debug().Err(err).Str("status", status.String()).Msg("offer refused")
		return reject(status, err.Error())
	}
	if !n.ledger.opened(s.id, sdp) {
		// Deleted while the engine was opening it.
		if _, cerr := n.media.Close(s.id); cerr != nil {
			log.Debug().Err(cerr).Msg("close session deleted while opening")
		}
		return reject(callgridv1.Status_STATUS_UNKNOWN_SESSION, "session deleted while opening")
	}
	n.metrics.offers.WithLabelValues(callgridv1.Status_STATUS_OK.String()).Inc()
	n.metrics.sessions.Inc()
	// Not "service": the injected logger names the process by it, and a
	// key written twice is a line some log stores reject.
	log.Debug().Str("media_service", service.String()).Msg("session opened")
	if service != callgridv1.MediaService_MEDIA_SERVICE_BRIDGE {
		// A built-in service answers at once: no answer request follows,
		// so the call is recorded now for hang-up should this node die.
		n.ledger.markAnswered(s.id, false, n.ledger.switchCount(s.id), false, n.cfg.TranscodeCost, time.Now())
		n.writeCallRecord(s.id)
	}
	return &callgridv1.OfferReply{Status: callgridv1.Status_STATUS_OK, SessionId: s.id, NodeId: n.cfg.ID, Sdp: sdp}
}

func (n *Node) handleAnswer(ctx context.Context, req *callgridv1.AnswerRequest) *callgridv1.AnswerReply {
	s, ok := n.ledger.lookup(req.GetSessionId())
	if !ok {
		return &callgridv1.AnswerReply{Status: callgridv1.Status_STATUS_UNKNOWN_SESSION, Detail: "no session " + req.GetSessionId()}
	}
	// Before anything can refuse it: an answer the engine refuses still
	// shows the claimer had the offer's reply, and the proxy may go on
	// with the call here (a provisional one refused leaves it ringing,
	// its early media not anchored).
	n.ledger.answerArrived(s.id)
	if len(req.GetSdp()) == 0 {
		return &callgridv1.AnswerReply{Status: callgridv1.Status_STATUS_BAD_SDP, Detail: "answer carries no sdp"}
	}
	// The callee may switch codec (HandleTranscodingChange) at any moment
	// once the engine has its answer, so the flag the engine returns can be
	// stale by the time the ledger records it. A switch reported during
	// the call below is newer than that flag if it came after the engine's
	// answer, but older if it came before the engine took the answer up
	// (after a provisional answer the callee can already switch), and an
	// answer with new SDP may then have changed transcoding again. So when
	// a switch came in, the engine is asked again: a repeat of the same
	// answer changes nothing there and returns the flag as it is then; a
	// switch reported from the moment before asking either came after the
	// repeat or is already in its flag, so markAnswered can take the last
	// such switch's flag. The engine reports the answer's own change too
	// (see Media), which comes in here like a switch and is asked about
	// likewise.
	switches := n.ledger.switchCount(s.id)
	sdp, transcoding, err := n.media.Answer(ctx, s.id, req.GetSdp(), req.GetProvisional())
	if err != nil {
		return &callgridv1.AnswerReply{Status: statusOf(err), Detail: err.Error()}
	}
	if again := n.ledger.switchCount(s.id); again != switches {
		if _, now, err := n.media.Answer(context.WithoutCancel(ctx), s.id, req.GetSdp(), req.GetProvisional()); err == nil {
			transcoding, switches = now, again
		}
	}
	n.ledger.setDialog(s.id, req.GetDialog())
	change, transcoding, err := n.ledger.markAnswered(s.id, transcoding, switches, req.GetProvisional(), n.cfg.TranscodeCost, time.Now())
	switch {
	case errors.Is(err, errNoRoomToTranscode):
		if change > 0 {
			n.log.Info().Str("call_id", s.callID).Str("session_id", s.id).Bool("provisional", req.GetProvisional()).
				Msg("answer refused for lack of units: its transcoding charged until the call is settled")
		}
		return &callgridv1.AnswerReply{Status: callgridv1.Status_STATUS_FULL, Detail: err.Error()}
	case err != nil:
		return &callgridv1.AnswerReply{Status: statusOf(err), Detail: "no session " + s.id}
	}
	n.writeCallRecord(s.id)
	return &callgridv1.AnswerReply{Status: callgridv1.Status_STATUS_OK, Sdp: sdp, Transcoding: transcoding}
}

// openMedia has the engine open a reserved session. Should the engine
// panic, the bus recovers it and the node serves on, so the reservation is
// dropped first: a session left opening is never released, reaped or
// closed, and its units would be lost until the process restarts.
func (n *Node) openMedia(ctx context.Context, p OpenParams) ([]byte, error) {
	defer func() {
		if r := recover(); r != nil {
			n.ledger.drop(p.SessionID)
			panic(r)
		}
	}()
	return n.media.Open(ctx, p)
}

// writeCallRecord queues the call record of an answered session.
func (n *Node) writeCallRecord(id string) {
	n.ledger.writeCallRecord(id, n.cfg.ID, func(call uint64, rec *callgridv1.CallRecord) {
		n.writer.record(fleet.CallKey(n.cfg.ID, id), call, rec)
	})
}

func (n *Node) handleUpdate(ctx context.Context, req *callgridv1.UpdateRequest) *callgridv1.UpdateReply {
	s, ok := n.ledger.lookup(req.GetSessionId())
	if !ok {
		return &callgridv1.UpdateReply{Status: callgridv1.Status_STATUS_UNKNOWN_SESSION, Detail: "no session " + req.GetSessionId()}
	}
	if req.GetLeg() != callgridv1.Leg_LEG_A && req.GetLeg() != callgridv1.Leg_LEG_B {
		return &callgridv1.UpdateReply{Status: callgridv1.Status_STATUS_BAD_REQUEST, Detail: "leg must be LEG_A or LEG_B"}
	}
	var (
		sdp         []byte
		transcoding bool
		err         error
	)
	// A codec switch may land while the engine applies the update, and
	// its report (HandleTranscodingChange) may come after the engine's
	// reply was made: updateTranscoding sorts out which is newer by the
	// count of reports from before the call.
	wasTranscoding, switches := n.ledger.transcodingNow(s.id)
	switch {
	case req.GetRollback():
		sdp, transcoding, err = n.media.Rollback(ctx, s.id, req.GetLeg())
	case len(req.GetSdp()) == 0:
		return &callgridv1.UpdateReply{Status: callgridv1.Status_STATUS_BAD_SDP, Detail: "update carries no sdp"}
	default:
		sdp, transcoding, err = n.media.Update(ctx, s.id, req.GetLeg(), req.GetSdp(), req.GetAnswer())
	}
	if err != nil {
		return &callgridv1.UpdateReply{Status: statusOf(err), Detail: err.Error()}
	}
	_, transcoding = n.ledger.updateTranscoding(s.id, transcoding, switches, n.cfg.TranscodeCost)
	if transcoding != wasTranscoding {
		// The engine may have charged it already, through its report.
		n.log.Info().Str("call_id", s.callID).Str("session_id", s.id).Bool("transcoding", transcoding).Msg("update changed transcoding")
	}
	return &callgridv1.UpdateReply{Status: callgridv1.Status_STATUS_OK, Sdp: sdp}
}

// HandleTranscodingChange is told by the media engine that a session began
// or stopped transcoding (an endpoint switched to another codec of its
// answer, or a negotiation changed it), so its capacity units follow. The
// engine tells it of every change, in order, before the negotiation that
// made one returns; the answer and update handlers rely on that.
func (n *Node) HandleTranscodingChange(id string, transcoding bool) {
	s, change := n.ledger.switched(id, transcoding, n.cfg.TranscodeCost)
	if change == 0 {
		return
	}
	// Debug: the engine logs a leg's first switches itself, and an
	// endpoint alternating codecs on every packet must not flood the log
	// from the event loop that calls this.
	n.log.Debug().Str("call_id", s.callID).Str("session_id", s.id).Bool("transcoding", transcoding).Msg("transcoding changed")
}

func (n *Node) handleDelete(_ context.Context, req *callgridv1.DeleteRequest) *callgridv1.DeleteReply {
	cause := req.GetCause()
	if cause == "" {
		cause = "delete"
	}
	s, q := n.endSession(req.GetSessionId(), cause, false)
	if s == nil {
		return &callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_UNKNOWN_SESSION, Detail: "no session " + req.GetSessionId()}
	}
	return &callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_OK, Quality: q}
}

// endSession releases a session's units, closes its media and publishes the
// call-ended event; hangUp is as for finish. It returns the session ended
// and its quality, or nil for a session the node does not hold.
func (n *Node) endSession(id, cause string, hangUp bool) (*session, *callgridv1.MediaQuality) {
	s, ok := n.ledger.release(id)
	if !ok {
		return nil, nil
	}
	return s, n.endReleased(s, cause, hangUp)
}

// endReleased closes the media of a session the ledger released and
// finishes it; it returns the session's quality.
func (n *Node) endReleased(s *session, cause string, hangUp bool) *callgridv1.MediaQuality {
	q, err := n.media.Close(s.id)
	if err != nil {
		n.log.Warn().Err(err).Str("call_id", s.callID).Str("session_id", s.id).Msg("close session media")
	}
	n.finish(s, cause, q, hangUp)
	return q
}

// HandleMediaTimeout is the engine's callback for a session that saw no RTP
// for its timeout; the engine has already stopped its media.
func (n *Node) HandleMediaTimeout(id string, q *callgridv1.MediaQuality) {
	s, ok := n.ledger.release(id)
	if !ok {
		return
	}
	n.log.Info().Str("call_id", s.callID).Str("session_id", id).Msg("media timeout")
	n.metrics.timeouts.Inc()
	n.writer.event("media_timeout", bus.SubjectMediaTimeout, &callgridv1.MediaTimeout{
		CallId: s.callID, SessionId: id, NodeId: n.cfg.ID, Dialog: s.dialog, Quality: q, UnixMs: time.Now().UnixMilli(),
	})
	n.finish(s, "media_timeout", q, false)
}

// finish accounts for a session the ledger released and publishes its end;
// hangUp asks the proxies to hang up an answered call's legs.
func (n *Node) finish(s *session, cause string, q *callgridv1.MediaQuality, hangUp bool) {
	var duration float64
	if !s.answered.IsZero() {
		duration = time.Since(s.answered).Seconds()
		// Here and only here for a session the ledger held: the ledger
		// releases a session once, whichever way it ends, so each answered
		// call is counted once. An unanswered one has no talk time and
		// would drag the average down.
		n.metrics.observeCall(cause, duration)
		if hangUp {
			// The node ends a call that is still up, and its record goes
			// below, so no proxy would ever hang its legs up: ask them to,
			// as for a media timeout.
			n.writer.event("media_timeout", bus.SubjectMediaTimeout, &callgridv1.MediaTimeout{
				CallId: s.callID, SessionId: s.id, NodeId: n.cfg.ID, Dialog: s.dialog, Quality: q, UnixMs: time.Now().UnixMilli(),
			})
		}
	}
	n.metrics.sessions.Dec()
	n.metrics.ended.WithLabelValues(causeLabel(cause)).Inc()
	n.log.Debug().Str("call_id", s.callID).Str("session_id", s.id).Str("cause", cause).Float64("duration_s", duration).Msg("session ended")
	ended := &callgridv1.CallEnded{
		CallId: s.callID, SessionId: s.id, NodeId: n.cfg.ID, DurationSeconds: duration, Cause: cause, Quality: q, UnixMs: time.Now().UnixMilli(),
	}
	if s.answered.IsZero() {
		if cause == fleet.CauseOfferTimeout {
			// Its claimer never had the offer's reply and has released
			// it: the call went on with the same session id on another
			// node, or nowhere. An end from here would be that call's
			// first, which consumers keep, and the call's own end, with
			// its talk time, would be lost. The session never carried a
			// call, so it is counted above and published nowhere.
			return
		}
		if cause == causeSetupTimeout && !s.answerReached {
			// No answer ever reached it, so the node cannot tell a
			// claimer that died from one that never had the offer's
			// reply and whose offer_timeout release was lost: the
			// leftover of a call carried on elsewhere under this id.
			// Its end would then shadow that call's, as above. One
			// that an answer reached was the call's, even if the
			// answer was refused: the claimer sent it here.
			return
		}
		// No record was written for it.
		n.writer.event("call_ended", bus.SubjectCallEnded, ended)
		return
	}
	n.writer.callEnded(fleet.CallKey(n.cfg.ID, s.id), s.call, bus.SubjectCallEnded, ended)
}

// causeSetupTimeout ends a session that had no final answer within the
// node's setup timeout.
const causeSetupTimeout = "setup_timeout"

// causeLabel keeps the metric's label set small: SIP status codes collapse
// to their class.
func causeLabel(cause string) string {
	switch cause {
	case "bye", "cancel", "media_timeout", causeSetupTimeout, "shutdown", fleet.CauseOfferTimeout, "delete", "node_down":
		return cause
	}
	if len(cause) == 3 && cause[0] >= '1' && cause[0] <= '6' {
		return cause[:1] + "xx"
	}
	return "other"
}
