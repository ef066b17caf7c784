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
