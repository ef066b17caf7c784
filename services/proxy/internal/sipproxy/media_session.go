package sipproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"strconv"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// URI parameters that carry an anchored dialog's media session in our
// Record-Route (and, for a built-in service, in our Contact). Every replica
// reads them back from the Route of an in-dialog request, so no replica
// keeps a call table.
const (
	// paramNode is the media node holding the session. It is missing from
	// the callee's route set of a late-offer call: the node is chosen only
	// when the callee's 2xx brings the offer.
	paramNode = "cg-node"
	// paramSession is the session id on that node.
	paramSession = "cg-session"
	// paramCallerTag is a hash of the caller's From tag: it tells which
	// party sent an in-dialog request. A hash rather than the tag itself
	// because tags may hold characters a URI parameter must escape.
	paramCallerTag = "cg-atag"
	// paramLateOffer marks a call whose INVITE had no SDP: the callee made
	// the offer, so the node's leg A faces the callee.
	paramLateOffer = "cg-late"
	// paramService names the built-in service a dialog talks to.
	paramService = "cg-svc"
)

// Parameters of our Via on a forwarded in-dialog INVITE of an anchored
// dialog, next to paramNode and paramSession. Every response to it comes
// back with our Via, also a 2xx that its sender repeats (until the ACK,
// for up to 64*T1) after our client transaction has ended; a re-INVITE's
// 2xx has no Record-Route to name the session, so only the Via tells
// which session and leg its SDP belongs to.
const (
	// paramLeg is the node leg facing the party that sent the INVITE:
	// "a" or "b".
	paramLeg = "cg-leg"
	// paramOffered marks an INVITE that carried an offer, which its 2xx
	// answers; without it the 2xx makes the offer.
	paramOffered = "cg-offer"
)

// viaLeg is a leg as paramLeg writes it.
func viaLeg(l callgridv1.Leg) string {
	if l == callgridv1.Leg_LEG_B {
		return "b"
	}
	return "a"
}

// inDialogOffer is what our Via on an in-dialog INVITE says of its media:
// the session, the leg facing the INVITE's sender, and whether the INVITE
// made the offer.
type inDialogOffer struct {
	sess    mediaSession
	reqLeg  callgridv1.Leg
	offered bool
}

// markVia adds the in-dialog INVITE's media to our Via.
func (o inDialogOffer) markVia(via *sip.ViaHeader) {
	if o.sess.node != "" {
		via.Params.Add(paramNode, o.sess.node)
	}
	via.Params.Add(paramSession, o.sess.session)
	via.Params.Add(paramLeg, viaLeg(o.reqLeg))
	if o.offered {
		via.Params.Add(paramOffered, "")
	}
}

// inDialogOfferFrom reads markVia's parameters back. marked reports a Via
// that carries a session at all; ok, one whose parameters all make sense.
func inDialogOfferFrom(p sip.HeaderParams) (o inDialogOffer, marked, ok bool) {
	sid, marked := p.Get(paramSession)
	if !marked {
		return inDialogOffer{}, false, false
	}
	switch p.GetOr(paramLeg, "") {
	case "a":
		o.reqLeg = callgridv1.Leg_LEG_A
	case "b":
		o.reqLeg = callgridv1.Leg_LEG_B
	}
	if sid == "" || o.reqLeg == callgridv1.Leg_LEG_UNSPECIFIED {
		return inDialogOffer{}, true, false
	}
	o.sess = mediaSession{node: p.GetOr(paramNode, ""), session: sid}
	o.offered = p.Has(paramOffered)
	return o, true, true
}

// mediaSession is what an anchored dialog's routing parameters say about
// its media.
type mediaSession struct {
	node      string
	session   string
	callerTag string
	lateOffer bool
	service   string
}

// params renders the session as URI parameters.
func (m mediaSession) params() sip.HeaderParams {
	p := sip.NewParams()
	if m.node != "" {
		p.Add(paramNode, m.node)
	}
	p.Add(paramSession, m.session)
	if m.callerTag != "" {
		p.Add(paramCallerTag, m.callerTag)
	}
	if m.lateOffer {
		p.Add(paramLateOffer, "")
	}
	if m.service != "" {
		p.Add(paramService, m.service)
	}
	return p
}

// mediaSessionFrom reads the session back from URI parameters.
func mediaSessionFrom(p sip.HeaderParams) (mediaSession, bool) {
	sid, ok := p.Get(paramSession)
	if !ok || sid == "" {
		return mediaSession{}, false
	}
	return mediaSession{
		node:      p.GetOr(paramNode, ""),
		session:   sid,
		callerTag: p.GetOr(paramCallerTag, ""),
		lateOffer: p.Has(paramLateOffer),
		service:   p.GetOr(paramService, ""),
	}, true
}

// legOf is the node leg facing the party whose From tag is fromTag. The
// node's leg A faces whoever made the first offer: the caller, or the
// callee of a late-offer call.
func (m mediaSession) legOf(fromTag string) callgridv1.Leg {
	fromCaller := tagHash(fromTag) == m.callerTag
	if fromCaller != m.lateOffer {
		return callgridv1.Leg_LEG_A
	}
	return callgridv1.Leg_LEG_B
}

// otherLeg is the leg opposite l.
func otherLeg(l callgridv1.Leg) callgridv1.Leg {
	if l == callgridv1.Leg_LEG_A {
		return callgridv1.Leg_LEG_B
	}
	return callgridv1.Leg_LEG_A
}

// tagHash is the short form of a tag carried in paramCallerTag.
func tagHash(tag string) string {
	h := fnv.New64a()
	h.Write([]byte(tag))
	return strconv.FormatUint(h.Sum64(), 36)
}

// sessionIDFor derives the session id from what identifies the INVITE
// transaction. A retransmitted INVITE that reaches a replica after the first
// transaction ended then claims the same session again, which the node
// answers idempotently, instead of stranding a second one.
func sessionIDFor(req *sip.Request) string {
	h := sha256.New()
	h.Write([]byte(req.CallID().Value()))
	h.Write([]byte{0})
	h.Write([]byte(req.From().Params.GetOr("tag", "")))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)))
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// toTag is a message's To tag, or "".
func toTag(m interface{ To() *sip.ToHeader }) string {
	if t := m.To(); t != nil {
		return t.Params.GetOr("tag", "")
	}
	return ""
}

// fromTag is a message's From tag, or "".
func fromTag(m interface{ From() *sip.FromHeader }) string {
	if f := m.From(); f != nil {
		return f.Params.GetOr("tag", "")
	}
	return ""
}
