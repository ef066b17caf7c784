package node

import (
	"context"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
)

// eventQueueSize bounds the events waiting to be published; beyond it new
// events are dropped and logged rather than slowing call control.
const eventQueueSize = 4096

type pendingEvent struct {
	kind, subject string
	msg           proto.Message
}

// eventQueue publishes events off the request path: a delete is answered
// without waiting for the stream's acknowledgement of its call-ended event.
type eventQueue struct {
	bus *bus.Client
	log zerolog.Logger
	ch  chan pendingEvent
}

func newEventQueue(c *bus.Client, log zerolog.Logger) *eventQueue {
	return &eventQueue{bus: c, log: log, ch: make(chan pendingEvent, eventQueueSize)}
}

func (q *eventQueue) push(kind, subject string, msg proto.Message) {
	select {
	case q.ch <- pendingEvent{kind: kind, subject: subject, msg: msg}:
	default:
		q.log.Warn().Str("kind", kind).Msg("event queue full: event dropped")
	}
}

// run publishes until ctx ends, then flushes what is queued.
func (q *eventQueue) run(ctx context.Context) {
	for {
		select {
		case ev := <-q.ch:
			q.publish(ev)
		case <-ctx.Done():
			for {
				select {
				case ev := <-q.ch:
					q.publish(ev)
				default:
					return
				}
			}
		}
	}
}

func (q *eventQueue) publish(ev pendingEvent) {
	if err := q.bus.PublishEvent(context.Background(), ev.kind, ev.subject, ev.msg); err != nil {
		q.log.Warn().Err(err).Str("kind", ev.kind).Msg("publish event")
	}
}
