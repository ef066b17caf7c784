package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// Message is a protobuf message type whose pointer is T.
type Message[T any] interface {
	*T
	proto.Message
}

// Subscription is a served subject; stop it with Drain, which answers what
// it has already received. Unsubscribe drops that.
type Subscription = nats.Subscription

// Drain stops subs taking requests and waits until each has answered every
// request it had already received, or ctx ends. NATS removes a draining
// subscription's interest at once but still hands its handler what is
// queued, and reports it closed only after the handler has returned for the
// last of those; Unsubscribe would drop them unanswered, leaving each
// requester to wait out its deadline before trying elsewhere. A request
// sent once the drain has begun finds no responder, which the requester
// learns at once. When ctx ends first, the subscriptions still draining are
// unsubscribed, so no handler starts on what they hold, and the error says
// how many were left; a handler already running is not stopped. A
// connection closed meanwhile drops the queue with it and reports no
// closing, so ctx is what bounds the wait then too.
func Drain(ctx context.Context, subs ...*Subscription) error {
	var errs []error
	closed := make([]<-chan nats.SubStatus, len(subs))
	for i, s := range subs {
		// Listening before the drain starts, the closing cannot be missed.
		closed[i] = s.StatusChanged(nats.SubscriptionClosed)
		if err := s.Drain(); err != nil {
			errs = append(errs, fmt.Errorf("drain %s: %w", s.Subject, err))
			closed[i] = nil
		}
	}
	for i, ch := range closed {
		if ch == nil {
			continue
		}
		select {
		case <-ch:
			continue
		case <-ctx.Done():
		}
		var left int
		for j, s := range subs[i:] {
			if closed[i+j] == nil || !s.IsValid() {
				continue
			}
			left++
			// Whatever it holds is dropped: its requesters time out,
			// as they would had the server gone.
			_ = s.Unsubscribe()
		}
		if left > 0 {
			errs = append(errs, fmt.Errorf("drain subscriptions: %d of %d still handling requests: %w", left, len(subs), ctx.Err()))
		}
		break
	}
	return errors.Join(errs...)
}

// Serve answers requests on subject with handle. Every reply type must have
// `status` (callgrid.v1.Status) and `detail` fields: a payload that does not
// decode is answered with STATUS_BAD_REQUEST and counted, a handler that
// panics is answered with STATUS_INTERNAL and counted, and a reply that
// cannot be encoded is replaced by one that can: the requester always hears
// back, and no message crashes the process. The handler's context carries
// the requester's deadline. queue, when set, spreads requests over a queue
// group.
func Serve[Req, Rep any, PReq Message[Req], PRep Message[Rep]](
	c *Client, subject, queue, op string, handle func(context.Context, PReq) PRep,
) (*Subscription, error) {
	statusField, detailField, err := replyFields(PRep(new(Rep)))
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", subject, err)
	}
	callback := func(msg *nats.Msg) {
		data := serveMsg(c, op, msg, handle, statusField, detailField)
		if msg.Reply == "" {
			return
		}
		if err := msg.Respond(data); err != nil {
			// The requester waits out its deadline for nothing: worth
			// seeing, unlike a reply it no longer wanted.
			c.log.Warn().Err(err).Str("op", op).Str("subject", msg.Subject).Msg("send reply")
		}
	}
	var sub *nats.Subscription
	if queue != "" {
		sub, err = c.nc.QueueSubscribe(subject, queue, callback)
	} else {
		sub, err = c.nc.Subscribe(subject, callback)
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub, nil
}

// serveMsg is everything Serve does with one request but send the reply:
// deadline, decoding, the handler and encoding. It always returns an
// encoded reply with an explicit status.
func serveMsg[Req, Rep any, PReq Message[Req], PRep Message[Rep]](
	c *Client, op string, msg *nats.Msg, handle func(context.Context, PReq) PRep,
	statusField, detailField protoreflect.FieldDescriptor,
) []byte {
	ctx, cancel := requestContext(msg)
	defer cancel()
	reply := dispatch(ctx, c, op, msg.Data, handle, statusField, detailField)
	data, err := encodeReply(reply, detailField)
	if err != nil {
		c.log.Error().Err(err).Str("op", op).Str("subject", msg.Subject).Msg("encode reply")
		reply = PRep(new(Rep))
		setStatus(reply, statusField, detailField, callgridv1.Status_STATUS_INTERNAL, "encode "+op+" reply: "+strings.ToValidUTF8(err.Error(), "?"))
		// A reply of only a status and valid UTF-8 always encodes.
		data, _ = proto.Marshal(reply)
	}
	status := callgridv1.Status(reply.ProtoReflect().Get(statusField).Enum())
	c.metrics.served.WithLabelValues(op, status.String()).Inc()
	return data
}

// encodeReply marshals reply. Details are often built from what the
// requester sent (an SDP line, say), and proto3 refuses a string that is not
// UTF-8: such a detail is mended rather than losing the whole reply.
func encodeReply(reply proto.Message, detailField protoreflect.FieldDescriptor) ([]byte, error) {
	r := reply.ProtoReflect()
	if d := r.Get(detailField).String(); !utf8.ValidString(d) {
		r.Set(detailField, protoreflect.ValueOfString(strings.ToValidUTF8(d, "\uFFFD")))
	}
	data, err := proto.Marshal(reply)
	if err != nil {
		return nil, fmt.Errorf("marshal reply: %w", err)
	}
	return data, nil
}

// dispatch decodes one request and runs the handler; any payload gets a
// reply with a status.
func dispatch[Req, Rep any, PReq Message[Req], PRep Message[Rep]](
	ctx context.Context, c *Client, op string, data []byte, handle func(context.Context, PReq) PRep,
	statusField, detailField protoreflect.FieldDescriptor,
) PRep {
	var reply PRep
	req := PReq(new(Req))
	if err := proto.Unmarshal(data, req); err != nil {
		c.metrics.badPayloads.WithLabelValues(op).Inc()
		c.log.Debug().Err(err).Str("op", op).Msg("bad payload")
		reply = PRep(new(Rep))
		setStatus(reply, statusField, detailField, callgridv1.Status_STATUS_BAD_REQUEST, "undecodable "+op+" request: "+err.Error())
		return reply
	}
	reply, panicked := runHandler(ctx, c, op, req, handle)
	switch {
	case panicked:
		reply = PRep(new(Rep))
		setStatus(reply, statusField, detailField, callgridv1.Status_STATUS_INTERNAL, op+" handler failed")
	case reply == nil:
		reply = PRep(new(Rep))
		setStatus(reply, statusField, detailField, callgridv1.Status_STATUS_INTERNAL, "no reply")
	}
	return reply
}

// runHandler runs handle, turning a panic into a reported failure instead
// of a crash: NATS runs the handler on the subscription's goroutine with
// nothing above it to recover, so one request that trips a bug would
// otherwise end every call on the node.
func runHandler[Req, Rep any, PReq Message[Req], PRep Message[Rep]](
	ctx context.Context, c *Client, op string, req PReq, handle func(context.Context, PReq) PRep,
) (reply PRep, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			c.metrics.handlerPanics.WithLabelValues(op).Inc()
			c.log.Error().Str("op", op).Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("request handler panicked")
			reply, panicked = nil, true
		}
	}()
	return handle(ctx, req), false
}

// requestContext carries the requester's deadline into the handler.
func requestContext(msg *nats.Msg) (context.Context, context.CancelFunc) {
	if msg.Header != nil {
		if ms, err := strconv.ParseInt(msg.Header.Get(headerDeadline), 10, 64); err == nil {
			return context.WithDeadline(context.Background(), time.UnixMilli(ms))
		}
	}
	return context.WithCancel(context.Background())
}

func replyFields(m proto.Message) (status, detail protoreflect.FieldDescriptor, err error) {
	fields := m.ProtoReflect().Descriptor().Fields()
	status, detail = fields.ByName("status"), fields.ByName("detail")
	if status == nil || status.Enum() == nil || status.Enum().FullName() != "callgrid.v1.Status" {
		return nil, nil, fmt.Errorf("reply %s has no callgrid.v1.Status field named status", m.ProtoReflect().Descriptor().FullName())
	}
	if detail == nil || detail.Kind() != protoreflect.StringKind {
		return nil, nil, fmt.Errorf("reply %s has no string field named detail", m.ProtoReflect().Descriptor().FullName())
	}
	return status, detail, nil
}

func setStatus(m proto.Message, statusField, detailField protoreflect.FieldDescriptor, status callgridv1.Status, detail string) {
	r := m.ProtoReflect()
	r.Set(statusField, protoreflect.ValueOfEnum(protoreflect.EnumNumber(status)))
	r.Set(detailField, protoreflect.ValueOfString(detail))
}
