package location

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvCheckTimeout bounds each look at the bucket's own state, so that a bus
// that does not answer holds the watcher up no longer than this.
const kvCheckTimeout = 2 * time.Second

var (
	// errBucketMissing: the bucket's stream is gone, deleted or lost with
	// the server's store. Nothing but a proxy replica creates it, and until
	// one does every registration fails.
	errBucketMissing = errors.New("location bucket missing")
	// errBucketReplaced: the bucket was deleted and created again under
	// the watcher, which stays open but brings nothing of the new bucket:
	// its consumer resumes after the old bucket's last revision.
	errBucketReplaced = errors.New("location bucket replaced")
	errWatcherClosed  = errors.New("location watcher closed")
)

// Run watches the bucket into the local replica and sweeps lapsed bindings
// until ctx ends. It returns only after its goroutines have exited. Whatever
// ends a watch, the next one replays the bucket into the replica afresh; a
// missing bucket is created again.
func (s *KVStore) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.sweepLoop(ctx) })
	for ctx.Err() == nil {
		err := s.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		s.log.Warn().Err(err).Msg("location watch interrupted")
		if errors.Is(err, errBucketMissing) {
			s.recreate(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(kvWatchRetry):
		}
	}
	wg.Wait()
	return nil
}

// watch follows the bucket until ctx ends or the watch cannot go on. A
// watcher rides out a bus outage or a server restart by itself, but not
// the bucket being replaced, which only its creation time shows.
func (s *KVStore) watch(ctx context.Context) error {
	created, err := s.bucketCreated(ctx)
	if err != nil {
		return err
	}
	epoch := s.local.begin()
	w, err := s.kv.Watch(ctx, recordKeyPrefix+"*")
	if err != nil {
		s.m.watchErrors.Inc()
		return fmt.Errorf("watch location bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	check := time.NewTicker(s.cfg.SweepInterval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case entry, ok := <-w.Updates():
			if !ok {
				s.m.resyncWatcherClosed.Inc()
				return errWatcherClosed
			}
			s.apply(entry, epoch)
		case <-check.C:
			now, err := s.bucketCreated(ctx)
			switch {
			case errors.Is(err, errBucketMissing):
				s.m.resyncBucketMissing.Inc()
				return err
			case err != nil:
				// The bus is away; the watcher carries on once it is back.
			case !now.Equal(created):
				s.m.resyncBucketReplaced.Inc()
				return fmt.Errorf("%w: created %s, watched since its creation %s", errBucketReplaced,
					now.Format(time.RFC3339Nano), created.Format(time.RFC3339Nano))
			}
		}
	}
}

// bucketCreated returns when the bucket's stream was created: a bucket
// deleted and created again has a new time, which a server restart keeps.
func (s *KVStore) bucketCreated(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, kvCheckTimeout)
	defer cancel()
	st, err := s.kv.Status(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return time.Time{}, fmt.Errorf("%w: %w", errBucketMissing, err)
	}
	if err != nil {
		s.m.statusErrors.Inc()
		return time.Time{}, fmt.Errorf("location bucket status: %w", err)
	}
	info, ok := st.(interface{ StreamInfo() *jetstream.StreamInfo })
	if !ok || info.StreamInfo() == nil {
		return time.Time{}, nil
	}
	return info.StreamInfo().Created, nil
}

// recreate creates the bucket again as NewKVStore does; the store's handle
// addresses it by name, so it serves the new bucket as it did the old.
func (s *KVStore) recreate(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, kvCheckTimeout)
	defer cancel()
	if _, err := s.js.CreateOrUpdateKeyValue(ctx, s.cfg.bucketConfig()); err != nil {
		s.m.recreateErrors.Inc()
		s.log.Warn().Err(err).Msg("recreate location bucket")
		return
	}
	s.m.recreations.Inc()
	s.log.Warn().Msg("location bucket recreated")
}

func (s *KVStore) apply(entry jetstream.KeyValueEntry, epoch uint64) {
	if entry == nil {
		// The watcher delivers nil once it has replayed the current values.
		s.local.end(epoch)
		s.synced.Store(true)
		return
	}
	aor, ok := aorOfKey(entry.Key())
	if !ok {
		return
	}
	now := time.Now()
	if entry.Operation() != jetstream.KeyValuePut {
		s.local.set(aor, nil, entry.Revision(), epoch, now)
		return
	}
	r, err := decodeRecord(entry.Value())
	if err != nil {
		s.log.Debug().Err(err).Str("key", entry.Key()).Msg("skip undecodable bindings")
		return
	}
	s.local.set(aor, r.Bindings, entry.Revision(), epoch, now)
}
