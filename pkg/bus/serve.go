package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

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

// Subscription is a served subject; Drain or Unsubscribe it to stop.
type Subscription = nats.Subscription

// Serve answers requests on subject with handle. Every reply type must have
// `status` (callgrid.v1.Status) and `detail` fields: a payload that does not
// decode is answered with STATUS_BAD_REQUEST and counted, never dropped
// silently and never a panic. A request whose deadline has passed on arrival
// is not worked on. queue, when set, spreads requests over a queue group.
func Serve[Req, Rep any, PReq Message[Req], PRep Message[Rep]](
	c *Client, subject, queue, op string, handle func(context.Context, PReq) PRep,
) (*Subscription, error) {
	statusField, detailField, err := replyFields(PRep(new(Rep)))
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", subject, err)
	}
	callback := func(msg *nats.Msg) {
		ctx, cancel := requestContext(msg)
		defer cancel()
		reply := dispatch(ctx, c, op, msg.Data, handle, statusField, detailField)
		if msg.Reply == "" {
			return
		}
		data, err := proto.Marshal(reply)
		if err != nil {
			c.log.Error().Err(err).Str("subject", msg.Subject).Msg("encode reply")
			return
		}
		if err := msg.Respond(data); err != nil {
			c.log.Debug().Err(err).Str("subject", msg.Subject).Msg("send reply")
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
	} else {
		reply = handle(ctx, req)
		if reply == nil {
			reply = PRep(new(Rep))
			setStatus(reply, statusField, detailField, callgridv1.Status_STATUS_INTERNAL, "no reply")
		}
	}
	status := callgridv1.Status(reply.ProtoReflect().Get(statusField).Enum())
	c.metrics.served.WithLabelValues(op, status.String()).Inc()
	return reply
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
