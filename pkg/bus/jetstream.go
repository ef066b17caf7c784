package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// DefaultEventsMaxAge is how long the events stream keeps events for
// consumers that were away.
const DefaultEventsMaxAge = 72 * time.Hour

// eventsDuplicateWindow is how long the events stream remembers an event's
// id to drop a retried copy of it.
const eventsDuplicateWindow = 2 * time.Minute

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
		// PublishEvent's ids let a retry after a lost acknowledgement be
		// stored once. The node's writer retries for as long as the bus is
		// away, so the window has to outlast a short outage; the server
		// keeps every id for this long, about half a million at 2,000
		// calls a second.
		Duplicates: eventsDuplicateWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", EventsStream, err)
	}
	return s, nil
}

// PublishEvent publishes an event to the events stream and waits for the
// stream's acknowledgement, so a returned nil means the event is stored.
// An error does not mean it is not: the acknowledgement may be what was
// lost. So publishing the same event again (same subject and content)
// within the stream's duplicate window stores it once, and callers may
// retry freely without a CDR consumer billing a call twice. kind labels the
// metrics.
func (c *Client) PublishEvent(ctx context.Context, kind, subject string, event proto.Message) error {
	if !c.nc.IsConnected() {
		c.metrics.published.WithLabelValues(kind, "unavailable").Inc()
		return fmt.Errorf("publish %s: %w", kind, ErrUnavailable)
	}
	// Deterministic, so that a retry's bytes, and so its id, are the same.
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(event)
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
	if _, err := c.js.Publish(ctx, subject, data, jetstream.WithMsgID(eventID(subject, data))); err != nil {
		c.metrics.published.WithLabelValues(kind, "error").Inc()
		return fmt.Errorf("publish %s event: %w", kind, err)
	}
	c.metrics.published.WithLabelValues(kind, "ok").Inc()
	return nil
}

// eventID names an event by its subject and content. Every event carries
// its time in milliseconds besides its call or node, so two that encode
// alike are one event published twice.
func eventID(subject string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(subject))
	h.Write([]byte{0})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil)[:16])
}
