// Package fleet is the media fleet as both sides see it: nodes advertise
// their status in a key-value bucket with a TTL (heartbeat), proxies keep a
// watched view of it and claim sessions from nodes with free capacity.
package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"callgrid.dev/pkg/bus"
)

// DefaultHeartbeatInterval is how often a node rewrites its status.
const DefaultHeartbeatInterval = time.Second

// TTLHeartbeats is how many heartbeats a status outlives: a node that missed
// this many is gone.
const TTLHeartbeats = 3

// minMarkerTTL is the shortest time the server keeps expiry markers.
const minMarkerTTL = time.Second

// OpenBucket opens (creating if needed) the fleet bucket. Status keys expire
// TTLHeartbeats intervals after their last write, and the expiry leaves a
// marker that watchers see, so a dead node vanishes from every view.
// replicas is the bucket's JetStream replica count; 0 takes the bus
// client's configured count.
func OpenBucket(ctx context.Context, c *bus.Client, interval time.Duration, replicas int) (jetstream.KeyValue, error) {
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	if replicas <= 0 {
		replicas = c.Replicas()
	}
	ttl := TTLHeartbeats * interval
	kv, err := c.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         bus.BucketFleet,
		Description:    "media node status, one key per live node",
		History:        1,
		TTL:            ttl,
		LimitMarkerTTL: max(ttl, minMarkerTTL),
		Storage:        jetstream.MemoryStorage,
		Replicas:       replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open fleet bucket: %w", err)
	}
	return kv, nil
}
