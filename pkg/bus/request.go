package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// headerDeadline carries the requester's deadline (Unix milliseconds) so the
// server can stop working on a request nobody waits for any more.
const headerDeadline = "Callgrid-Deadline"

// Request sends req on subject and decodes the reply into reply. The
// deadline is the earlier of ctx's and the configured request timeout. op
// labels the metrics.
func (c *Client) Request(ctx context.Context, op, subject string, req, reply proto.Message) error {
	if !c.nc.IsConnected() {
		c.metrics.requests.WithLabelValues(op, "unavailable").Inc()
		return fmt.Errorf("%s on %s: %w", op, subject, ErrUnavailable)
	}
	deadline := time.Now().Add(c.cfg.RequestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	data, err := proto.Marshal(req)
	if err != nil {
		c.metrics.requests.WithLabelValues(op, "error").Inc()
		return fmt.Errorf("encode %s request: %w", op, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(headerDeadline, strconv.FormatInt(deadline.UnixMilli(), 10))

	start := time.Now()
	resp, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		result, kind := classifyRequestError(err)
		c.metrics.requests.WithLabelValues(op, result).Inc()
		return fmt.Errorf("%s on %s: %w", op, subject, kind)
	}
	c.metrics.requestDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err := proto.Unmarshal(resp.Data, reply); err != nil {
		c.metrics.requests.WithLabelValues(op, "bad_reply").Inc()
		return fmt.Errorf("%s on %s: %w: %w", op, subject, ErrBadReply, err)
	}
	c.metrics.requests.WithLabelValues(op, "ok").Inc()
	return nil
}

func classifyRequestError(err error) (string, error) {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return "no_responders", ErrNoResponders
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout", ErrTimeout
	// With no reconnect buffer, a request sent in the moment between the
	// connection dropping and IsConnected saying so fails with
	// ErrReconnectBufExceeded: the bus is away, not the request wrong.
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return "unavailable", ErrUnavailable
	case errors.Is(err, context.Canceled):
		return "canceled", err
	default:
		return "error", err
	}
}
