package location

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Defaults for KVConfig.
const (
	DefaultKVBucket      = "sip_location"
	DefaultKVMaxAge      = 2 * time.Hour
	DefaultSweepInterval = 30 * time.Second
	// kvWatchRetry is the pause before re-opening a watcher the bus closed.
	kvWatchRetry = time.Second
)

// Compare-and-set retries of one Update. Each failed attempt means another
// update of the AOR landed first, so every round lets one through; a
// handful covers the phones of one user registering at once.
const (
	updateAttempts = 8
	// updateBackoff is the most the first retry waits; each further one
	// may wait twice as long, jittered so that contenders spread out
	// (at most about 0.25s over all attempts).
	updateBackoff = 2 * time.Millisecond
)

// KVConfig configures the JetStream key-value location store.
type KVConfig struct {
	// Bucket is the KV bucket name (default "sip_location").
	Bucket string `yaml:"bucket"`
	// MaxAge drops a key nobody rewrote for this long, a safety net under
	// the sweeper; it must exceed the registrar's maximum expiry, which
	// the proxy checks at start (default 2h).
	MaxAge time.Duration `yaml:"max_age"`
	// Replicas is the stream replication factor (default 1).
	Replicas int `yaml:"replicas"`
	// SweepInterval is how often lapsed bindings are deleted, and how
	// often the watcher checks that the bucket it follows has not been
	// deleted or replaced (default 30s).
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// WithDefaults returns a copy with every zero field set to its default.
func (c KVConfig) WithDefaults() KVConfig {
	if c.Bucket == "" {
		c.Bucket = DefaultKVBucket
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultKVMaxAge
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	return c
}

// KVStore keeps bindings in a JetStream KV bucket so every proxy replica
// sees every registration: one key per AOR (see aorRecord), rewritten by
// compare-and-set on its revision. Run keeps a watched in-memory replica;
// once it has caught up, lookups are served from memory, so routing
// survives a short bus outage.
type KVStore struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	cfg   KVConfig
	log   zerolog.Logger
	local *replica
	m     *kvMetrics

	synced atomic.Bool
}

// KVOption is an optional knob of NewKVStore.
type KVOption func(*kvOptions)

type kvOptions struct {
	reg prometheus.Registerer
}

// WithRegisterer registers the store's metrics (sip_proxy_location_*) with
// reg, once per store: a second store on one registry fails. Without it the
// store counts all the same, unseen.
func WithRegisterer(reg prometheus.Registerer) KVOption {
	return func(o *kvOptions) { o.reg = reg }
}

// NewKVStore creates (or opens) the bucket.
func NewKVStore(ctx context.Context, js jetstream.JetStream, cfg KVConfig, log zerolog.Logger, opts ...KVOption) (*KVStore, error) {
	var o kvOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.WithDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg.bucketConfig())
	if err != nil {
		return nil, fmt.Errorf("open location bucket %q: %w", cfg.Bucket, err)
	}
	local := newReplica()
	m := newKVMetrics(local)
	if o.reg != nil {
		if err := m.register(o.reg); err != nil {
			return nil, err
		}
	}
	return &KVStore{
		js:    js,
		kv:    kv,
		cfg:   cfg,
		log:   log.With().Str("component", "location").Str("bucket", cfg.Bucket).Logger(),
		local: local,
		m:     m,
	}, nil
}

func (c KVConfig) bucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.Bucket,
		Description: "SIP registrations, one key per AOR",
		History:     1,
		TTL:         c.MaxAge,
		Replicas:    c.Replicas,
	}
}

// Lookup serves from the watched replica once it is in sync, else reads the bucket.
func (s *KVStore) Lookup(ctx context.Context, aor string) ([]Binding, error) {
	if checkAOR(aor) != nil {
		// Nothing can be stored under it, and asking the bus for it could
		// cost the connection.
		return nil, nil
	}
	now := time.Now()
	if s.synced.Load() {
		return s.local.lookup(aor, now), nil
	}
	bindings, _, err := s.read(ctx, aor)
	if err != nil {
		return nil, err
	}
	return liveBindings(bindings, now), nil
}

// Update reads the AOR's record, applies change and writes the result only
// if the record is still at the revision read; when another update came
// first it reads again and retries, up to updateAttempts, then fails with
// ErrConflict.
//
// The first attempt starts from the local replica when it is in sync,
// which saves a round trip on the usual path: a stale replica costs only
// a failed compare-and-set. A refusal or a no-op is only believed on a
// fresh read, though, since the replica may not have the latest state yet.
func (s *KVStore) Update(ctx context.Context, aor string, change Change) ([]Binding, error) {
	if err := checkAOR(aor); err != nil {
		return nil, fmt.Errorf("update bindings: %w", err)
	}
	fromReplica := s.synced.Load()
	for attempt := 1; ; attempt++ {
		var (
			stored []Binding
			rev    uint64
			err    error
		)
		if fromReplica {
			stored, rev = s.local.state(aor)
		} else if stored, rev, err = s.read(ctx, aor); err != nil {
			return nil, err
		}
		now := time.Now()
		live := liveBindings(stored, now)
		next, err := change(slices.Clone(live))
		if err != nil {
			if fromReplica {
				fromReplica = false
				continue
			}
			if errors.Is(err, ErrUnchanged) {
				return live, nil
			}
			return nil, err
		}
		next = liveBindings(next, now)
		err = s.write(ctx, aor, rev, next, now)
		if err == nil {
			return next, nil
		}
		if !isRevisionConflict(err) {
			return nil, err
		}
		if attempt == updateAttempts {
			s.m.conflictGaveUp.Inc()
			return nil, fmt.Errorf("update %s after %d attempts: %w", aor, attempt, ErrConflict)
		}
		s.m.conflictRetried.Inc()
		fromReplica = false
		if err := pause(ctx, rand.N(updateBackoff<<(attempt-1))); err != nil {
			return nil, fmt.Errorf("update %s: %w: %w", aor, ErrUnavailable, err)
		}
	}
}

// read returns the AOR's bindings as stored, lapsed ones included, and the
// record's revision (0 when there is none).
func (s *KVStore) read(ctx context.Context, aor string) ([]Binding, uint64, error) {
	entry, err := s.kv.Get(ctx, recordKey(aor))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		s.m.readErrors.Inc()
		return nil, 0, fmt.Errorf("get bindings of %s: %w: %w", aor, ErrUnavailable, err)
	}
	r, err := decodeRecord(entry.Value())
	if err != nil {
		// Nothing can use a record nobody can read: the next update
		// replaces it, at its revision, rather than the AOR being unable
		// to register until the bucket drops the key.
		s.log.Warn().Err(err).Str("aor", aor).Msg("replacing undecodable bindings")
		return nil, entry.Revision(), nil
	}
	return r.Bindings, entry.Revision(), nil
}

// write stores bindings as the AOR's record if the record is still at rev
// (0: absent), deleting it when no binding is left, and applies the result
// to the local replica so this replica reads its own write at once.
func (s *KVStore) write(ctx context.Context, aor string, rev uint64, bindings []Binding, now time.Time) error {
	key := recordKey(aor)
	// Taken before the write: should a new watch begin meanwhile, the
	// revision may be of the bucket it replaced, and the watch brings the
	// write anyway.
	epoch := s.local.current()
	if len(bindings) == 0 {
		if rev == 0 {
			return nil
		}
		if err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
			return fmt.Errorf("delete bindings of %s: %w", aor, s.classifyWriteError(err))
		}
		// The delete marker's revision is not returned, but it is above
		// rev, and no other write of the key comes between: rev+1 orders
		// the tombstone after the record deleted and before any later
		// one; the watcher then brings the marker's own.
		s.local.set(aor, nil, rev+1, epoch, now)
		return nil
	}
	data, err := encodeRecord(aor, bindings)
	if err != nil {
		return err
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = s.kv.Create(ctx, key, data)
	} else {
		newRev, err = s.kv.Update(ctx, key, data, rev)
	}
	if err != nil {
		return fmt.Errorf("write %d bindings of %s (%d bytes): %w", len(bindings), aor, len(data), s.classifyWriteError(err))
	}
	// The replica keeps its own copy: Update hands bindings to its caller.
	s.local.set(aor, slices.Clone(bindings), newRev, epoch, now)
	return nil
}

// errRevisionConflict marks a compare-and-set that lost to another write.
var errRevisionConflict = errors.New("record changed since it was read")

// classifyKVError tells a lost compare-and-set from the bus being away.
func classifyKVError(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		// The bus is there and will refuse the record however often the
		// phone retries: not an outage to answer 503 for.
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("%w: %w", errRevisionConflict, err)
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		// A Create over a delete marker reports the conflict unwrapped.
		return fmt.Errorf("%w: %w", errRevisionConflict, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// classifyWriteError classifies a failed write and counts a bus error.
func (s *KVStore) classifyWriteError(err error) error {
	err = classifyKVError(err)
	if errors.Is(err, ErrUnavailable) {
		s.m.writeErrors.Inc()
	}
	return err
}

func isRevisionConflict(err error) bool { return errors.Is(err, errRevisionConflict) }

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Count returns the live bindings known to the local replica.
func (s *KVStore) Count() int { return s.local.count(time.Now()) }

// Synced reports whether the local replica has caught up with the bucket.
func (s *KVStore) Synced() bool { return s.synced.Load() }
