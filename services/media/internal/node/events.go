package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
)

// busQueueSize bounds the bus writes waiting to be made; beyond it new ones
// are dropped and logged rather than slowing call control. A node that can
// hold more sessions queues writesPerSession for each: ending every call at
// shutdown, or handing a previous run's calls over at start, queues them
// all at once, far faster than the bus takes them, and a hang-up or end
// event dropped then is a call nobody ends.
const busQueueSize = 4096

// writesPerSession is the most one session puts in the queue at once: its
// call record, then at its end a hang-up request and its end event with the
// record's removal.
const writesPerSession = 3

// maxSessions is more sessions than one node can hold: each holds at least
// an RTP port pair. It keeps a capacity configured far beyond the ports
// from sizing the queue.
const maxSessions = 65536 / 2

// queueSizeFor is the write queue a node of cfg needs.
func queueSizeFor(cfg Config) int {
	return max(busQueueSize, writesPerSession*min(cfg.CapacityUnits/max(cfg.PassthroughCost, 1), maxSessions))
}

// kvWriteTimeout bounds one call-record write.
const kvWriteTimeout = 2 * time.Second

// A write that fails is tried again, waiting writeRetryMin, doubling to
// writeRetryMax: for as long as the bus is away, and writeAttempts times
// while it is up.
const (
	writeRetryMin = 100 * time.Millisecond
	writeRetryMax = 5 * time.Second
	writeAttempts = 5
)

type busWriteKind int

const (
	writeUnknown busWriteKind = iota
	writeEvent
	writeRecord
	writeEnd
	// writeFlush writes nothing: it closes done once the writes queued
	// before it are made.
	writeFlush
	// writeRemoval removes the record of a call whose end went out as a
	// writeEnd: the events' goroutine hands it to the calls bucket's.
	writeRemoval
)

type busWrite struct {
	kind         busWriteKind
	label        string // event kind, for metrics and logs
	subject, key string
	msg          proto.Message
	// done is closed once a writeFlush is made, which giveUp cuts short.
	done   chan struct{}
	giveUp <-chan struct{}
	// call is, for a writeRecord, writeEnd or writeRemoval, the ledger's
	// number of the call (session.call): calls under the same key come
	// and go.
	call uint64
	// rev is, for a writeRemoval, the revision of the record to remove (0
	// when the writer wrote none it knows of): see removalOf.
	rev uint64
}

// busWriter makes the node's bus writes off the request path, in order: a
// delete is answered without waiting for the stream to acknowledge its
// call-ended event, and a call record's removal never overtakes its write.
// It has two lanes, each with a goroutine making its writes in the order
// queued: the events (ch, run) and the calls bucket's writes (bucket,
// runBucket). A record is queued on the bucket's lane directly, and an
// end's removal is handed to it once the end is out, so the bucket failing
// or hanging, each try waiting out kvWriteTimeout, holds up no event of
// the live calls, and the events stream failing, each event retried
// writeAttempts times, holds up no record.
//
// The order across the lanes that matters holds all the same. The records
// of one call are queued in order, by the ledger, on the one lane. A
// record's removal comes after its write: the ledger queues a call's end
// only after its records, and the end's removal joins the bucket's lane
// only once the end is out, behind those records. A flush goes through
// both lanes, behind the events and then the records and removals queued
// before it.
type busWriter struct {
	bus   *bus.Client
	calls jetstream.KeyValue
	log   zerolog.Logger
	// ch is the events' lane: the events, the ends and the flushes.
	ch chan busWrite
	// bucket is the calls bucket's lane: the records, queued there
	// directly, and what run hands over, the removals of those whose
	// call's end went out and the flushes.
	bucket chan busWrite
	// unremoved holds, for the runBucket goroutine only, the records
	// whose removal failed past writeAttempts: see keepRemoving.
	unremoved []removal
	// recorded holds, for the runBucket goroutine only, the last record
	// written under each key whose call's end has not been written yet:
	// one per call up, bounded by the node's sessions (and those whose
	// end a full queue dropped).
	recorded map[string]writtenRecord
}

func newBusWriter(c *bus.Client, log zerolog.Logger, size int) *busWriter {
	return &busWriter{bus: c, log: log, ch: make(chan busWrite, size), bucket: make(chan busWrite, size), recorded: make(map[string]writtenRecord)}
}

// enqueue queues op on its lane, or drops it, logged, when that lane is
// full rather than slow call control down.
func (w *busWriter) enqueue(op busWrite) {
	lane, full := w.ch, "bus write queue full: write dropped"
	if op.kind == writeRecord {
		lane, full = w.bucket, "calls bucket write queue full: write dropped"
	}
	select {
	case lane <- op:
	default:
		w.log.Warn().Str("kind", op.label).Msg(full)
	}
}

func (w *busWriter) event(kind, subject string, msg proto.Message) {
	w.enqueue(busWrite{kind: writeEvent, label: kind, subject: subject, msg: msg})
}

// record writes the record of call (session.call) under key. It goes on
// the calls bucket's lane at once, ahead of the events queued before it:
// a call is only as safe as its record, which has it hung up should the
// node die, and the events stream failing must not leave it unrecorded.
func (w *busWriter) record(key string, call uint64, msg proto.Message) {
	w.enqueue(busWrite{kind: writeRecord, label: "call_record", key: key, call: call, msg: msg})
}

// callEnded publishes the end event of call (session.call) and then
// removes its call record under key, in that order: a record is only
// removed once the end is out, so a call whose end could not be published
// (the bus gone as the node stops) keeps its record, and the node's next
// run publishes the end as it hands the call over. An end is thus never
// lost. A removal that fails once the end is out is tried again, without
// publishing again, for as long as the node runs (keepRemoving); only a
// record the calls bucket still refuses to remove when the node stops has
// its end go out twice, and consumers key ends on session_id.
func (w *busWriter) callEnded(key string, call uint64, subject string, msg proto.Message) {
	w.enqueue(busWrite{kind: writeEnd, label: "call_ended", subject: subject, key: key, call: call, msg: msg})
}

// flush waits until every write queued before it has been made (or given
// up), the removals owed included (settleRemovals), or ctx ends. It waits
// for room in a full queue rather than drop.
func (w *busWriter) flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case w.ch <- busWrite{kind: writeFlush, label: "flush", done: done, giveUp: ctx.Done()}:
	case <-ctx.Done():
		return fmt.Errorf("flush bus writes: %w", ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush bus writes: %w", ctx.Err())
	}
}

// publishTimeout bounds one publish that publishNow makes.
const publishTimeout = 2 * time.Second

// publishNow publishes an event and waits for the stream to store it,
// trying again as writeRetrying does, until ctx ends. It bypasses the
// queue: for what must not be dropped and is not on a request's path.
// Retries publish the same bytes, which the stream stores once.
func (w *busWriter) publishNow(ctx context.Context, kind, subject string, msg proto.Message) error {
	wait, failed := writeRetryMin, 0
	for {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := w.bus.PublishEvent(pctx, kind, subject, msg)
		cancel()
		if err == nil {
			return nil
		}
		if w.bus.Connected() {
			failed++
		}
		if failed >= writeAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, writeRetryMax)
	}
}

// run publishes the events until ctx ends, then what is queued, once
// each, handing the removals and flushes to runBucket as they come.
func (w *busWriter) run(ctx context.Context) {
	eventsDone := make(chan struct{})
	var bucket sync.WaitGroup
	bucket.Go(func() { w.runBucket(ctx, eventsDone) })
	defer bucket.Wait()
	defer close(eventsDone)
	for {
		select {
		case op := <-w.ch:
			w.dispatch(ctx, op)
		case <-ctx.Done():
			for {
				select {
				case op := <-w.ch:
					w.dispatchOnce(op)
				default:
					return
				}
			}
		}
	}
}

// dispatch makes an event, retrying, and hands a flush to runBucket; an
// end's removal is handed over once the end is out.
func (w *busWriter) dispatch(ctx context.Context, op busWrite) {
	switch op.kind {
	case writeEvent:
		w.writeRetrying(ctx, op)
	case writeEnd:
		if w.writeRetrying(ctx, op) {
			w.toBucket(removalAfter(op))
		}
	case writeFlush:
		// Not dropped: the flush's caller would wait out its timeout.
		select {
		case w.bucket <- op:
		case <-ctx.Done():
			w.toBucket(op)
		}
	}
}

// dispatchOnce is dispatch at shutdown: each event tried once.
func (w *busWriter) dispatchOnce(op busWrite) {
	switch op.kind {
	case writeEvent, writeEnd:
		if err := w.write(op); err != nil {
			w.giveUp(op, err, "bus write failed at shutdown: dropped")
			return
		}
		if op.kind == writeEnd {
			w.toBucket(removalAfter(op))
		}
	default:
		w.toBucket(op)
	}
}

// removalAfter is the removal of the record of the call whose end is end.
func removalAfter(end busWrite) busWrite {
	return busWrite{kind: writeRemoval, label: "call_record_removal", key: end.key, call: end.call}
}

// toBucket hands op to runBucket, or drops it, logged, when the bucket's
// writes are so far behind that their queue is full: waiting for room
// would hold the events up after all.
func (w *busWriter) toBucket(op busWrite) {
	select {
	case w.bucket <- op:
	default:
		w.log.Warn().Str("kind", op.label).Msg("calls bucket write queue full: write dropped")
	}
}

// runBucket makes the calls bucket's writes, the records queued to it and
// what run hands it, until ctx ends, then, once run has handed over what
// it had queued (eventsDone), what is queued, once each.
func (w *busWriter) runBucket(ctx context.Context, eventsDone <-chan struct{}) {
	retry := time.NewTicker(removalRetryInterval)
	defer retry.Stop()
	for {
		select {
		case op := <-w.bucket:
			if op.kind == writeFlush {
				w.settleRemovals(ctx, op.giveUp)
				close(op.done)
				continue
			}
			if op, ok := w.removalOf(op); ok {
				w.writeRetrying(ctx, op)
			}
		case <-retry.C:
			w.removeUnremoved()
		case <-ctx.Done():
			<-eventsDone
			for {
				select {
				case op := <-w.bucket:
					op, ok := w.removalOf(op)
					if !ok {
						continue
					}
					if err := w.write(op); err != nil {
						w.giveUp(op, err, "bus write failed at shutdown: dropped")
					}
				default:
					w.removeUnremoved()
					if len(w.unremoved) > 0 {
						w.log.Warn().Int("records", len(w.unremoved)).
							Msg("call records of ended calls not removed at shutdown: the calls will be ended again (node_down)")
					}
					return
				}
			}
		}
	}
}

// writeRetrying makes one write, trying again while the bus is away (the
// writes behind it wait, so their order holds) and a few times while it is
// up, and reports whether it was made. A media timeout or call record
// that a proxy must act on thus survives a bus outage; the queue's bound
// still caps what waits.
func (w *busWriter) writeRetrying(ctx context.Context, op busWrite) bool {
	wait, failed := writeRetryMin, 0
	for {
		err := w.write(op)
		if err == nil {
			if failed > 0 || wait > writeRetryMin {
				w.log.Info().Str("kind", op.label).Msg("bus write made after retries")
			}
			return true
		}
		if w.bus.Connected() {
			failed++
		}
		if failed >= writeAttempts {
			w.giveUp(op, err, "bus write failed: dropped")
			return false
		}
		if wait == writeRetryMin {
			w.log.Warn().Err(err).Str("kind", op.label).Msg("bus write failed: retrying")
		}
		select {
		case <-ctx.Done():
			w.giveUp(op, err, "bus write failed at shutdown: dropped")
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, writeRetryMax)
	}
}

// giveUp ends the tries of op, which failed with err: a removal owed
// after its call's end went out is kept for later (keepRemoving), and any
// other write is dropped, logged as msg.
func (w *busWriter) giveUp(op busWrite, err error, msg string) {
	if op.kind == writeRemoval {
		w.keepRemoving(op.key, op.rev)
		return
	}
	w.log.Warn().Err(err).Str("kind", op.label).Msg(msg)
}

func (w *busWriter) write(op busWrite) error {
	var err error
	switch op.kind {
	case writeFlush:
		// At shutdown: the removals still owed are worth one more try
		// (see settleRemovals).
		w.removeUnremoved()
		close(op.done)
	case writeEvent, writeEnd:
		err = w.bus.PublishEvent(context.Background(), op.label, op.subject, op.msg)
	case writeRecord:
		var data []byte
		if data, err = proto.Marshal(op.msg); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), kvWriteTimeout)
			var rev uint64
			rev, err = w.calls.Put(ctx, op.key, data)
			cancel()
			// A failed put may have been stored all the same: the call's
			// record is then at a revision unknown (0).
			w.recorded[op.key] = writtenRecord{call: op.call, rev: rev}
			if err == nil {
				w.forgetRemovals(op.key)
			}
		}
	case writeRemoval:
		if err = w.removeRecord(op.key, op.rev); err != nil {
			err = fmt.Errorf("remove call record after its end event: %w", err)
		}
	}
	return err
}

// removeRecord removes the record under key, only at revision rev when
// rev is not 0. A record at another revision was written since, by a later
// call under the same key (session ids come from the proxies and can come
// back to the same node), or is gone: either way the removal is done, and
// a later call's record stays.
func (w *busWriter) removeRecord(key string, rev uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), kvWriteTimeout)
	defer cancel()
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := w.calls.Delete(ctx, key, opts...)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	return err
}
