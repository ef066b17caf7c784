package node

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
)

// busQueueSize bounds the bus writes waiting to be made; beyond it new ones
// are dropped and logged rather than slowing call control.
const busQueueSize = 4096

// kvWriteTimeout bounds one call-record write.
const kvWriteTimeout = 2 * time.Second

type busWriteKind int

const (
	writeUnknown busWriteKind = iota
	writeEvent
	writeRecord
	writeForget
)

type busWrite struct {
	kind         busWriteKind
	label        string // event kind, for metrics and logs
	subject, key string
	msg          proto.Message
}

// busWriter makes the node's bus writes off the request path, in order: a
// delete is answered without waiting for the stream to acknowledge its
// call-ended event, and a call record's removal never overtakes its write.
type busWriter struct {
	bus   *bus.Client
	calls jetstream.KeyValue
	log   zerolog.Logger
	ch    chan busWrite
}

func newBusWriter(c *bus.Client, log zerolog.Logger) *busWriter {
	return &busWriter{bus: c, log: log, ch: make(chan busWrite, busQueueSize)}
}

func (w *busWriter) enqueue(op busWrite) {
	select {
	case w.ch <- op:
	default:
		w.log.Warn().Str("kind", op.label).Msg("bus write queue full: write dropped")
	}
}

func (w *busWriter) event(kind, subject string, msg proto.Message) {
	w.enqueue(busWrite{kind: writeEvent, label: kind, subject: subject, msg: msg})
}

func (w *busWriter) record(key string, msg proto.Message) {
	w.enqueue(busWrite{kind: writeRecord, label: "call_record", key: key, msg: msg})
}

func (w *busWriter) forget(key string) {
	w.enqueue(busWrite{kind: writeForget, label: "call_record_delete", key: key})
}

// run writes until ctx ends, then flushes what is queued.
func (w *busWriter) run(ctx context.Context) {
	for {
		select {
		case op := <-w.ch:
			w.write(op)
		case <-ctx.Done():
			for {
				select {
				case op := <-w.ch:
					w.write(op)
				default:
					return
				}
			}
		}
	}
}

func (w *busWriter) write(op busWrite) {
	var err error
	switch op.kind {
	case writeEvent:
		err = w.bus.PublishEvent(context.Background(), op.label, op.subject, op.msg)
	case writeRecord:
		var data []byte
		if data, err = proto.Marshal(op.msg); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), kvWriteTimeout)
			_, err = w.calls.Put(ctx, op.key, data)
			cancel()
		}
	case writeForget:
		ctx, cancel := context.WithTimeout(context.Background(), kvWriteTimeout)
		err = w.calls.Delete(ctx, op.key)
		cancel()
	}
	if err != nil {
		w.log.Warn().Err(err).Str("kind", op.label).Msg("bus write failed")
	}
}
