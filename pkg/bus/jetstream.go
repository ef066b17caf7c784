package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// DefaultEventsMaxAge is how long the events stream keeps events for
// consumers that were away.
const DefaultEventsMaxAge = 72 * time.Hour

// KeyValue opens the bucket described by cfg, creating it or bringing its
// configuration up to date. Safe to call from many processes at once.
func (c *Client) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open key-value bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// EnsureEventsStream creates or updates the stream that keeps every event.
func (c *Client) EnsureEventsStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "call and node events of the callgrid fleet",
		Subjects:    []string{EventsSubjects},
		MaxAge:      DefaultEventsMaxAge,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		Replicas:    c.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", EventsStream, err)
	}
	return s, nil
}

// PublishEvent publishes an event to the events stream and waits for the
// stream's acknowledgement, so a returned nil means the event is stored.
// kind labels the metrics.
func (c *Client) PublishEvent(ctx context.Context, kind, subject string, event proto.Message) error {
	if !c.nc.IsConnected() {
		c.metrics.published.WithLabelValues(kind, "unavailable").Inc()
		return fmt.Errorf("publish %s: %w", kind, ErrUnavailable)
	}
	data, err := proto.Marshal(event)
	if err != nil {
		c.metrics.published.WithLabelValues(kind, "error").Inc()
		return fmt.Errorf("encode %s event: %w", kind, err)
	}
	if ctx.Err() == nil {
		if _, hasDeadline := ctx.Deadline(); !hasDeadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
			defer cancel()
		}
	}
	if _, err := c.js.Publish(ctx, subject, data); err != nil {
		c.metrics.published.WithLabelValues(kind, "error").Inc()
		return fmt.Errorf("publish %s event: %w", kind, err)
	}
	c.metrics.published.WithLabelValues(kind, "ok").Inc()
	return nil
}
