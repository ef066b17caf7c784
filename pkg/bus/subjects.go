package bus

import (
	"fmt"
	"regexp"
)

// The subject scheme. Every subject starts with the product token and a
// version token, so a future v2 contract can run beside v1 on one bus:
//
//	callgrid.v1.media.<node_id>.offer     request/reply, OfferRequest → OfferReply
//	callgrid.v1.media.<node_id>.answer    request/reply, AnswerRequest → AnswerReply
//	callgrid.v1.media.<node_id>.update    request/reply, UpdateRequest → UpdateReply
//	callgrid.v1.media.<node_id>.delete    request/reply, DeleteRequest → DeleteReply
//	callgrid.v1.events.call.started       CallStarted
//	callgrid.v1.events.call.answered      CallAnswered
//	callgrid.v1.events.call.ended         CallEnded
//	callgrid.v1.events.call.media_timeout MediaTimeout
//	callgrid.v1.events.node.up            NodeUp
//	callgrid.v1.events.node.down          NodeDown
//
// Key-value buckets carry state every replica must see: the fleet view
// (NodeStatus per node id, with a TTL of a few heartbeats) and the answered
// calls each node holds (CallRecord per session).
const (
	subjectRoot = "callgrid.v1"

	// EventsSubjects is the filter of the events stream.
	EventsSubjects = subjectRoot + ".events.>"
	// EventsStream is the JetStream stream that keeps every event for
	// durable consumers (CDRs, cleanup).
	EventsStream = "CALLGRID_V1_EVENTS"

	SubjectCallStarted  = subjectRoot + ".events.call.started"
	SubjectCallAnswered = subjectRoot + ".events.call.answered"
	SubjectCallEnded    = subjectRoot + ".events.call.ended"
	SubjectMediaTimeout = subjectRoot + ".events.call.media_timeout"
	SubjectNodeUp       = subjectRoot + ".events.node.up"
	SubjectNodeDown     = subjectRoot + ".events.node.down"

	// BucketFleet holds one NodeStatus per live media node.
	BucketFleet = "callgrid_v1_fleet"
	// BucketCalls holds one CallRecord per answered call, keyed
	// "<node_id>.<session_id>", so a dead node's calls can be hung up.
	BucketCalls = "callgrid_v1_calls"
)

// MediaOp is one of the control operations a media node serves.
type MediaOp string

// The media control operations, each on its own subject.
const (
	OpOffer  MediaOp = "offer"
	OpAnswer MediaOp = "answer"
	OpUpdate MediaOp = "update"
	OpDelete MediaOp = "delete"
)

var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateToken reports whether s can stand as one subject token (a node
// id, say): no dots, wildcards, spaces or empties that would change what a
// subject matches.
func ValidateToken(s string) error {
	if !tokenPattern.MatchString(s) {
		return fmt.Errorf("%q is not a valid subject token (1-64 of A-Z a-z 0-9 _ -)", s)
	}
	return nil
}

// MediaSubject is the control subject of one operation on one node.
func MediaSubject(nodeID string, op MediaOp) string {
	return subjectRoot + ".media." + nodeID + "." + string(op)
}
