package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

// Every way a request can end is classified as callers need it: the proxy
// answers ErrUnavailable with a fast 503, anything unclassified with 500.
func TestClassifyRequestError(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		result string
		kind   error
	}{
		{"no responders", nats.ErrNoResponders, "no_responders", ErrNoResponders},
		{"deadline", context.DeadlineExceeded, "timeout", ErrTimeout},
		{"nats timeout", nats.ErrTimeout, "timeout", ErrTimeout},
		{"closed", nats.ErrConnectionClosed, "unavailable", ErrUnavailable},
		{"draining", nats.ErrConnectionDraining, "unavailable", ErrUnavailable},
		{"reconnecting", nats.ErrConnectionReconnecting, "unavailable", ErrUnavailable},
		{"disconnected", nats.ErrDisconnected, "unavailable", ErrUnavailable},
		// The connection dropped after IsConnected was checked: with no
		// reconnect buffer the publish is refused at once.
		{"dropped just before the publish", fmt.Errorf("publish: %w", nats.ErrReconnectBufExceeded), "unavailable", ErrUnavailable},
		{"canceled", context.Canceled, "canceled", context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			result, kind := classifyRequestError(tc.err)
			if result != tc.result || !errors.Is(kind, tc.kind) {
				t.Fatalf("classifyRequestError(%v) = %s, %v; want %s, %v", tc.err, result, kind, tc.result, tc.kind)
			}
		})
	}
}
