package sipproxy

import (
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// Defaults of MediaOptions fields left zero.
const (
	DefaultMediaRetryAfter     = 5 * time.Second
	DefaultMediaRequestTimeout = time.Second
	DefaultOrphanGrace         = 2 * time.Second
)

// MediaControl drives sessions on the media fleet; *fleet.Claimer is one.
type MediaControl interface {
	Offer(ctx context.Context, req *callgridv1.OfferRequest) (*callgridv1.OfferReply, error)
	Answer(ctx context.Context, nodeID string, req *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error)
	Update(ctx context.Context, nodeID string, req *callgridv1.UpdateRequest) (*callgridv1.UpdateReply, error)
	Delete(ctx context.Context, nodeID string, req *callgridv1.DeleteRequest) (*callgridv1.DeleteReply, error)
}

// MediaOptions anchors calls' media on the fleet.
type MediaOptions struct {
	// Control claims and drives sessions.
	Control MediaControl
	// Nodes lists the ids of the live nodes. It finds the node of a
	// late-offer session from the callee's side, whose route set cannot
	// name it, and tells a node that came back from one that died.
	Nodes func() []string
	// Mode is the media mode of calls whose dialplan rule names none:
	// MediaModeAnchor (default) or MediaModeBypass.
	Mode string
	// RetryAfter is sent with the 503 answering a call no node could take
	// or made while the bus is away (default 5s).
	RetryAfter time.Duration
	// RequestTimeout bounds one control request, a whole claim included
	// (default 1s): a call the fleet cannot serve gets its 503 fast.
	RequestTimeout time.Duration
	// OrphanGrace is how long a node must stay out of the fleet, with the
	// bus up, before its calls are hung up (default 2s). A bus restart
	// empties every view for a moment; the grace keeps that from hanging
	// up calls on nodes that are fine.
	OrphanGrace time.Duration
}

func (m MediaOptions) withDefaults() MediaOptions {
	setDefault(&m.Mode, MediaModeAnchor)
	setDefault(&m.RetryAfter, DefaultMediaRetryAfter)
	setDefault(&m.RequestTimeout, DefaultMediaRequestTimeout)
	setDefault(&m.OrphanGrace, DefaultOrphanGrace)
	if m.Nodes == nil {
		m.Nodes = func() []string { return nil }
	}
	return m
}

// hasNode reports whether id is a live node.
func (m MediaOptions) hasNode(id string) bool {
	return slices.Contains(m.Nodes(), id)
}

// WithMedia anchors media on the fleet: without it every call is bypassed
// and service rules answer 503.
func WithMedia(m MediaOptions) Option {
	return func(o *options) { o.media = &m }
}

// WithBus publishes call events to the events stream and hangs up calls
// whose media timed out (one replica of the queue group handles each).
func WithBus(c *bus.Client) Option {
	return func(o *options) { o.bus = c }
}

// WithOrphanedCalls hangs up the answered calls of nodes that leave the
// fleet. leaves is filled by the fleet view (fleet.WithLeaveHandler with
// leaves.Add); calls is the calls bucket the nodes record their calls in.
func WithOrphanedCalls(calls jetstream.KeyValue, leaves *NodeLeaves) Option {
	return func(o *options) { o.calls, o.leaves = calls, leaves }
}
