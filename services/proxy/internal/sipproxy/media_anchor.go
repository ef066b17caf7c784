package sipproxy

import (
	"fmt"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// mediaPhase is what a transaction's SDP means to the node.
type mediaPhase int

const (
	phaseUnknown mediaPhase = iota
	// phaseOffered: the INVITE's offer claimed the session; the callee's
	// answers (18x, 2xx) go through Answer.
	phaseOffered
	// phaseLateOffer: the INVITE had no SDP; the callee's 2xx carries the
	// offer, which claims the session, and the caller answers in the ACK.
	phaseLateOffer
	// phaseUpdate: an in-dialog offer or answer, through Update.
	phaseUpdate
)

// callMedia is the media side of one transaction. It lives as long as the
// transaction's handler, like the rest of call.
type callMedia struct {
	sess   mediaSession
	phase  mediaPhase
	dialog *callgridv1.Dialog
	// reqLeg is the node leg facing whoever sent an in-dialog request.
	reqLeg callgridv1.Leg
	// offered: that request carried an offer, so the SDP of its responses
	// answers it; without one, a 2xx offers and the ACK answers.
	offered bool
	// earlyAnswer is the callee's SDP of the last provisional response the
	// node took: the answer itself when the 2xx carries none (RFC 3262).
	earlyAnswer []byte
	// earlyUnanchored is the callee's SDP of a provisional response the
	// node did not take while it had taken none: the caller got that
	// response without SDP, so its offer is still unanswered, and a 2xx
	// without SDP must bring it the node's answer to this one.
	earlyUnanchored []byte
	// earlyRefused: the node refused the answer of an in-dialog offer that
	// came in a provisional response, and took none since. A 2xx without
	// SDP then answers nothing (RFC 3262: the answer was that reliable
	// provisional's), so the offer is rolled back at the 2xx.
	earlyRefused bool
	// answered: a 2xx passed through the node, so the session lives on
	// after the transaction.
	answered bool
	// sent2xx is how the 2xx went upstream. sipgo hands 2xx
	// retransmissions to a hook on its own goroutine; they must carry the
	// same rewritten SDP and route.
	sent2xx atomic.Pointer[rewritten2xx]
}

type rewritten2xx struct {
	body []byte // nil: the 2xx goes without one
	// toTag is the callee's tag of the answer the node took: a 2xx with
	// another comes from another fork of the INVITE.
	toTag string
	// routed is the late-offer session whose node our Record-Route names.
	routed *mediaSession
}

// mediaMode is the media mode for a new call routed by rule (nil for a
// registered user).
func (s *Server) mediaMode(rule *compiledRule) string {
	if s.media == nil {
		return MediaModeBypass
	}
	if rule != nil && rule.Media != "" {
		return rule.Media
	}
	return s.media.Mode
}

// anchorInvite claims a session for a new INVITE and puts the node's SDP in
// the body every branch is built from, so serial failover keeps one session
// and the same SDP. An INVITE without SDP only gets its session id and
// routing parameters: the offer comes with the callee's 2xx.
func (s *Server) anchorInvite(c *call, base *sip.Request) error {
	if hasForeignBody(c.req) {
		return errForeignBody
	}
	sess := mediaSession{session: sessionIDFor(c.req), callerTag: tagHash(fromTag(c.req))}
	d := callerDialog(c.req, base)
	sdp := sdpBody(c.req)
	if sdp == nil {
		sess.lateOffer = true
		c.media = &callMedia{sess: sess, phase: phaseLateOffer, dialog: d}
		return nil
	}
	reply, err := s.claim(&callgridv1.OfferRequest{
		CallId: d.GetCallId(), Sdp: sdp, Service: callgridv1.MediaService_MEDIA_SERVICE_BRIDGE, Dialog: d, SessionId: sess.session,
	})
	if err != nil {
		return err
	}
	sess.node = reply.GetNodeId()
	setSDPBody(base, reply.GetSdp())
	c.media = &callMedia{sess: sess, phase: phaseOffered, dialog: d}
	c.log = c.logger().With().Str("node_id", sess.node).Str("session_id", sess.session).Logger()
	c.logger().Debug().Msg("media anchored")
	s.publishCallStarted(sess, d)
	return nil
}

// recordRouteParams are the parameters our Record-Route carries for the
// transaction's media, or nil.
func (c *call) recordRouteParams() sip.HeaderParams {
	if c.media == nil || c.media.phase == phaseUpdate {
		return nil
	}
	return c.media.sess.params()
}

// markVia puts the media of an in-dialog INVITE in our Via on it (see
// paramLeg), so that a 2xx retransmitted after our client transaction
// ended can still be given the SDP the first one got.
func (m *callMedia) markVia(via *sip.ViaHeader) {
	if m == nil || m.phase != phaseUpdate {
		return
	}
	inDialogOffer{sess: m.sess, reqLeg: m.reqLeg, offered: m.offered}.markVia(via)
}

// mediaProvisional passes a provisional response's SDP (early media)
// through the node. A failure only costs the early media: the body is
// dropped so it cannot route media around the node, and the 2xx decides.
func (s *Server) mediaProvisional(c *call, res *sip.Response, up *sip.Response) {
	m := c.media
	if m == nil || sdpBody(res) == nil {
		return
	}
	var err error
	switch m.phase {
	case phaseOffered:
		var reply *callgridv1.AnswerReply
		if reply, err = s.answer(m.sess, sdpBody(res), s.withCallee(m.dialog, res), true); err == nil {
			m.earlyAnswer = sdpBody(res)
			setSDPBody(up, reply.GetSdp())
			return
		}
		if m.earlyAnswer == nil {
			m.earlyUnanchored = sdpBody(res)
		}
	case phaseUpdate:
		var sdp []byte
		if sdp, err = s.update(m.sess, otherLeg(m.reqLeg), sdpBody(res), m.offered); err == nil {
			m.earlyRefused = false
			setSDPBody(up, sdp)
			return
		}
		m.earlyRefused = m.offered
	}
	if err != nil {
		c.logger().Warn().Err(err).Int("status", res.StatusCode).Msg("early media not anchored")
	}
	dropBody(up)
}

// mediaAnswered passes a 2xx's SDP through the node and rewrites up, the
// response going to the caller. An error means the call cannot be carried:
// the caller gets the error's status and the callee a BYE.
func (s *Server) mediaAnswered(c *call, res *sip.Response, up *sip.Response) error {
	m := c.media
	if m == nil {
		return nil
	}
	sdp := sdpBody(res)
	switch m.phase {
	case phaseOffered:
		early := sdp == nil
		if early {
			// The answer came in a reliable provisional response already:
			// the node hears it again as final, which starts the call's
			// media timeout and records it as answered.
			sdp = m.earlyAnswer
			if sdp == nil && m.earlyUnanchored != nil {
				// The node did not take that answer then (no room to
				// transcode, say), and the caller has none: this 2xx
				// brings it the node's, or the call fails.
				sdp, early = m.earlyUnanchored, false
			}
			if sdp == nil {
				// No answer at all: the node took none, but this fork is
				// the call, and the 2xx of any other goes upstream
				// unanchored like any second fork's, not dropped as one
				// still with the node (rewriteRetransmitted2xx).
				m.answered = true
				m.sent2xx.Store(&rewritten2xx{toTag: toTag(res)})
				return nil
			}
		}
		reply, err := s.answer(m.sess, sdp, s.withCallee(m.dialog, res), false)
		if err != nil {
			return err
		}
		m.answered = true
		if early {
			m.sent2xx.Store(&rewritten2xx{toTag: toTag(res)})
		} else {
			setSDPBody(up, reply.GetSdp())
			m.sent2xx.Store(&rewritten2xx{body: reply.GetSdp(), toTag: toTag(res)})
		}
		s.publishCallAnswered(m.sess, m.dialog.GetCallId(), reply.GetTranscoding())
	case phaseLateOffer:
		if sdp == nil {
			if hasForeignBody(res) {
				return errForeignBody
			}
			return errNoOffer
		}
		d := s.withCallee(m.dialog, res)
		reply, err := s.claim(&callgridv1.OfferRequest{
			CallId: d.GetCallId(), Sdp: sdp, Service: callgridv1.MediaService_MEDIA_SERVICE_BRIDGE, Dialog: d, SessionId: m.sess.session,
		})
		if err != nil {
			return err
		}
		m.sess.node = reply.GetNodeId()
		m.answered = true
		setSDPBody(up, reply.GetSdp())
		s.addNodeToRecordRoute(up, m.sess)
		routed := m.sess
		m.sent2xx.Store(&rewritten2xx{body: reply.GetSdp(), routed: &routed, toTag: toTag(res)})
		c.log = c.logger().With().Str("node_id", m.sess.node).Str("session_id", m.sess.session).Logger()
		s.publishCallStarted(m.sess, d)
		s.publishCallAnswered(m.sess, d.GetCallId(), false)
	case phaseUpdate:
		if sdp == nil {
			if m.earlyRefused {
				// The answer in a reliable provisional the node refused
				// is the only one: the offerer gets back its session.
				c.logger().Warn().Msg("in-dialog early answer not anchored; the offerer keeps its session")
				return s.answerWithSessionKept(c, m, up, errEarlyAnswerRefused)
			}
			return nil
		}
		out, err := s.update(m.sess, otherLeg(m.reqLeg), sdp, m.offered)
		if err != nil {
			// The dialog is up either way; a failed re-negotiation keeps
			// the callee's media as it was, which is what a 488 would do
			// too, and neither this 2xx nor its retransmissions carry the
			// callee's SDP past the node. The sender of the re-INVITE is
			// still owed SDP: the answer to its offer (RFC 3261 13.2.1, a
			// 2xx to an offer carries one), or, having sent none, an
			// offer to answer in its ACK (RFC 3261 14.2, 13.2.1). Either
			// way the node makes it on its own (Rollback): the session as
			// it stands, unchanged down to its version (RFC 3264 §8).
			c.logger().Warn().Err(err).Bool("offered", m.offered).Msg("in-dialog sdp not anchored; the session stays as it was")
			return s.answerWithSessionKept(c, m, up, err)
		}
		setSDPBody(up, out)
		m.sent2xx.Store(&rewritten2xx{body: out})
	}
	return nil
}

// rewriteRetransmitted2xx gives a retransmitted 2xx what the first one got,
// and reports whether to relay it. One with SDP that comes while the first
// is still with the node (or never got through it) is dropped: it would
// carry the callee's own address past the node, and the callee repeats it
// until it is acknowledged.
func (m *callMedia) rewriteRetransmitted2xx(s *Server, up *sip.Response) bool {
	if m == nil {
		return true
	}
	sent := m.sent2xx.Load()
	if sent == nil {
		return sdpBody(up) == nil && !hasForeignBody(up)
	}
	if sent.toTag != "" && toTag(up) != sent.toTag {
		s.unanchorFork(up)
		return true
	}
	if sent.body == nil {
		dropBody(up)
	} else {
		setSDPBody(up, sent.body)
	}
	if sent.routed != nil {
		s.addNodeToRecordRoute(up, *sent.routed)
	}
	return true
}

// unanchorFork readies the 2xx of another fork than the one whose answer
// the node took. A proxy relays every 2xx (RFC 3261 16.7 step 5) and the
// caller ends the dialogs it does not keep, but this one has no media
// session: it goes without SDP, and without the session in our
// Record-Route, so that the caller's BYE for it leaves the kept call's
// media alone.
func (s *Server) unanchorFork(up *sip.Response) {
	dropBody(up)
	for _, h := range up.GetHeaders("Record-Route") {
		rr, ok := h.(*sip.RecordRouteHeader)
		if !ok || !s.self.isSelf(rr.Address.Host, rr.Address.Port) {
			continue
		}
		for _, p := range []string{paramNode, paramSession, paramCallerTag, paramLateOffer, paramService} {
			rr.Address.UriParams.Remove(p)
		}
	}
}

// addNodeToRecordRoute names the node in our Record-Route entries of a
// late-offer 2xx, so the caller's route set addresses the node directly
// (RFC 3261 16.7 step 4 lets a proxy rewrite its own Record-Route).
func (s *Server) addNodeToRecordRoute(up *sip.Response, sess mediaSession) {
	for _, h := range up.GetHeaders("Record-Route") {
		rr, ok := h.(*sip.RecordRouteHeader)
		if !ok || !s.self.isSelf(rr.Address.Host, rr.Address.Port) {
			continue
		}
		if sid, _ := rr.Address.UriParams.Get(paramSession); sid == sess.session {
			rr.Address.UriParams.Add(paramNode, sess.node)
		}
	}
}

// answerWithSessionKept rolls the session back after the node refused the
// SDP of a 2xx (or of the reliable provisional before it, refused), and
// has up, the 2xx to the sender of the in-dialog INVITE, and its
// retransmissions carry what the node last sent that sender: the session
// in force, which answers its offer anew, or is the offer it answers in
// its ACK when it made none. When the node gives no such SDP, the 2xx
// would leave the sender with an offer unanswered or nothing to answer:
// the request fails instead with refused, why the node refused (the
// callee's 2xx is then only acknowledged, hangUpLateAnswer), and the
// dialog keeps the session it had (RFC 3261 14.1).
func (s *Server) answerWithSessionKept(c *call, m *callMedia, up *sip.Response, refused error) error {
	kept, err := s.rollback(m.sess, m.reqLeg)
	if err != nil {
		return fmt.Errorf("in-dialog sdp refused (%w), and the session not rolled back: %w", refused, err)
	}
	if kept == nil {
		return fmt.Errorf("in-dialog sdp refused, and the node has no session sdp to send instead: %w", refused)
	}
	c.logger().Debug().Msg("in-dialog 2xx carries the session kept")
	setSDPBody(up, kept)
	m.sent2xx.Store(&rewritten2xx{body: kept})
	return nil
}

// rejectedOffer rolls the node's session back when an in-dialog request's
// offer got no 2xx: the dialog goes on with the session it had (RFC 3264
// §8), and so must the node, or a refused hold would leave it holding.
func (s *Server) rejectedOffer(c *call, outcome forwardOutcome) {
	m := c.media
	if m == nil || m.phase != phaseUpdate || !m.offered || outcome.answered {
		return
	}
	if _, err := s.rollback(m.sess, m.reqLeg); err != nil {
		c.logger().Warn().Err(err).Msg("rejected offer not rolled back")
	}
}

// endMedia releases the session of a new call that was not answered:
// cause is "cancel" or the final status sent upstream.
func (s *Server) endMedia(c *call, cause string) {
	m := c.media
	if m == nil || m.answered || m.phase == phaseUpdate || m.sess.node == "" {
		return
	}
	if err := s.release(m.sess, cause); err != nil {
		c.logger().Warn().Err(err).Str("cause", cause).Msg("release media session")
	}
}

// mediaInDialog passes an in-dialog request's SDP through the node holding
// the dialog's session, and ends the session on BYE.
func (s *Server) mediaInDialog(c *call, base *sip.Request, sess mediaSession) error {
	leg := sess.legOf(fromTag(c.req))
	c.log = c.logger().With().Str("node_id", sess.node).Str("session_id", sess.session).Logger()
	sdp := sdpBody(c.req)
	switch {
	case c.req.Method == sip.BYE:
		// Released before the BYE is relayed: the media is over either
		// way, and the callee may never answer the BYE.
		if err := s.release(sess, "bye"); err != nil {
			c.logger().Warn().Err(err).Msg("release media session on bye")
		}
	case c.req.IsAck():
		if sdp == nil {
			return nil
		}
		if sess.lateOffer && leg == callgridv1.Leg_LEG_B {
			// The caller's answer to the offer the callee's 2xx made.
			reply, err := s.answer(sess, sdp, nil, false)
			if err != nil {
				c.logger().Warn().Err(err).Msg("late-offer answer not anchored")
				dropBody(base)
				return nil
			}
			setSDPBody(base, reply.GetSdp())
			return nil
		}
		out, err := s.update(sess, leg, sdp, true)
		if err != nil {
			c.logger().Warn().Err(err).Msg("answer in ack not anchored")
			dropBody(base)
			return nil
		}
		setSDPBody(base, out)
	case c.req.Method == sip.INVITE || c.req.Method == sip.UPDATE:
		c.media = &callMedia{sess: sess, phase: phaseUpdate, reqLeg: leg, offered: sdp != nil}
		if hasForeignBody(c.req) {
			return errForeignBody
		}
		if sdp == nil {
			// The offer comes in the response, the answer in the ACK.
			return nil
		}
		out, err := s.update(sess, leg, sdp, false)
		if err != nil {
			return err
		}
		setSDPBody(base, out)
	}
	return nil
}

// anchorStray2xx gives a 2xx retransmitted after its transaction ended the
// SDP the first one carried, so a caller re-reading it is not pointed
// around the node. via is our Via, taken off up. It reports false when the
// response must not be relayed: its SDP cannot be passed through the node.
func (s *Server) anchorStray2xx(via *sip.ViaHeader, up *sip.Response) bool {
	if s.media == nil || !up.IsSuccess() {
		return true
	}
	if o, marked, ok := inDialogOfferFrom(via.Params); marked {
		return ok && s.anchorStrayInDialog2xx(o, up)
	}
	if sdpBody(up) == nil {
		return true
	}
	var sess mediaSession
	found := false
	for _, h := range up.GetHeaders("Record-Route") {
		rr, ok := h.(*sip.RecordRouteHeader)
		if !ok || !s.self.isSelf(rr.Address.Host, rr.Address.Port) {
			continue
		}
		sess, found = mediaSessionFrom(rr.Address.UriParams)
		break
	}
	switch {
	case !found || sess.service != "":
		return true
	case sess.lateOffer:
		// The offer it carried was claimed once; the caller has the node's.
		return false
	}
	// The node answers a repeated answer from its cache.
	reply, err := s.answer(sess, sdpBody(up), nil, false)
	if err != nil {
		s.log.Debug().Err(err).Str("session_id", sess.session).Msg("retransmitted 2xx not anchored")
		return false
	}
	setSDPBody(up, reply.GetSdp())
	return true
}

// anchorStrayInDialog2xx is anchorStray2xx for the 2xx of an in-dialog
// INVITE, which mediaAnswered passed through the node as an update. The
// same update again gets the same SDP back: the node's SDP for a leg keeps
// its origin version while its content stays the same (RFC 3264 §8), and a
// repeated answer, or offer, from the same leg builds the same content.
// Nothing says whether the node refused the first 2xx's SDP; if it did, it
// refuses it again, and this 2xx gets what answerWithSessionKept gave the
// first: the session in force, from a rollback that finds nothing left to
// undo. Without that SDP the first 2xx failed upstream, and this one is
// dropped; so is one when the node cannot be asked: its SDP would point
// the other party around the node.
func (s *Server) anchorStrayInDialog2xx(o inDialogOffer, up *sip.Response) bool {
	if hasForeignBody(up) {
		return false
	}
	sdp := sdpBody(up)
	if sdp == nil {
		// The answer came in a reliable provisional (RFC 3262): there is
		// no address in this one to hide.
		return true
	}
	out, err := s.update(o.sess, otherLeg(o.reqLeg), sdp, o.offered)
	switch {
	case err == nil:
		setSDPBody(up, out)
		return true
	case !isRefusedSDP(err):
		s.log.Debug().Err(err).Str("session_id", o.sess.session).Msg("retransmitted in-dialog 2xx not anchored")
		return false
	}
	kept, err := s.rollback(o.sess, o.reqLeg)
	if err != nil || kept == nil {
		// The first 2xx failed upstream for want of this SDP.
		s.log.Debug().Err(err).Str("session_id", o.sess.session).Msg("retransmitted in-dialog 2xx not anchored")
		return false
	}
	setSDPBody(up, kept)
	return true
}
