package location

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// KVConfig configures the JetStream key-value location store.
type KVConfig struct {
	// Bucket is the KV bucket name (default "sip_location").
	Bucket string `yaml:"bucket"`
	// MaxAge drops a key nobody refreshed for this long, a safety net under the
	// sweeper; it must exceed the registrar's maximum expiry (default 2h).
	MaxAge time.Duration `yaml:"max_age"`
	// Replicas is the stream replication factor (default 1).
	Replicas int `yaml:"replicas"`
	// SweepInterval is how often lapsed bindings are deleted (default 30s).
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

func (c KVConfig) withDefaults() KVConfig {
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

// KVStore keeps bindings in a JetStream KV bucket so every proxy replica sees
// every registration. One key per (AOR, contact) means refreshes from
// different replicas never contend on a shared record. Run keeps a watched
// in-memory replica; once it has caught up, lookups are served from memory,
// so routing survives a short bus outage.
type KVStore struct {
	kv    jetstream.KeyValue
	cfg   KVConfig
	log   zerolog.Logger
	local *MemoryStore

	synced atomic.Bool

	keysMu sync.Mutex
	keys   map[string]keyOwner // KV key -> binding identity, to apply deletes
}

type keyOwner struct{ aor, contact string }

// NewKVStore creates (or opens) the bucket.
func NewKVStore(ctx context.Context, js jetstream.JetStream, cfg KVConfig, log zerolog.Logger) (*KVStore, error) {
	cfg = cfg.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "SIP registrations, one key per AOR contact",
		History:     1,
		TTL:         cfg.MaxAge,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open location bucket %q: %w", cfg.Bucket, err)
	}
	return &KVStore{
		kv:    kv,
		cfg:   cfg,
		log:   log.With().Str("component", "location").Logger(),
		local: NewMemoryStore(nil),
		keys:  make(map[string]keyOwner),
	}, nil
}

// bindingKey maps (aor, contact) onto the KV key alphabet. The AOR part is a
// reversible prefix so one AOR's keys can be listed with a wildcard.
func bindingKey(aor, contact string) string {
	sum := sha256.Sum256([]byte(contact))
	return aorPrefix(aor) + "." + hex.EncodeToString(sum[:12])
}

func aorPrefix(aor string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.ToLower(aor)))
}

// Lookup serves from the watched replica once it is in sync, else reads the bucket.
func (s *KVStore) Lookup(ctx context.Context, aor string) ([]Binding, error) {
	if s.synced.Load() {
		return s.local.Lookup(ctx, aor)
	}
	lister, err := s.kv.ListKeysFiltered(ctx, aorPrefix(aor)+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list keys of %s: %w: %w", aor, ErrUnavailable, err)
	}
	var out []Binding
	now := time.Now()
	for key := range lister.Keys() {
		entry, err := s.kv.Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return nil, fmt.Errorf("get %s: %w: %w", key, ErrUnavailable, err)
		}
		var b Binding
		if err := json.Unmarshal(entry.Value(), &b); err != nil {
			continue
		}
		// The key prefix folds case, but the user part of an AOR does not
		// (RFC 3261 19.1.4): Bob's keys share bob's prefix.
		if b.AOR != aor {
			continue
		}
		if !b.Expired(now) {
			out = append(out, b)
		}
	}
	sortNewestFirst(out)
	return out, nil
}

// Save writes the binding to the bucket and to the local replica, so this
// replica reads its own write before the watcher echoes it.
func (s *KVStore) Save(ctx context.Context, b Binding) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode binding: %w", err)
	}
	key := bindingKey(b.AOR, b.Contact)
	if _, err := s.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("put binding %s: %w: %w", b.AOR, ErrUnavailable, err)
	}
	s.remember(key, b.AOR, b.Contact)
	return s.local.Save(ctx, b)
}

// Remove deletes the binding from the bucket and the local replica.
func (s *KVStore) Remove(ctx context.Context, aor, contact string) error {
	if err := s.kv.Delete(ctx, bindingKey(aor, contact)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete binding %s: %w: %w", aor, ErrUnavailable, err)
	}
	return s.local.Remove(ctx, aor, contact)
}

// Count returns the live bindings known to the local replica.
func (s *KVStore) Count() int { return s.local.Count() }

// Synced reports whether the local replica has caught up with the bucket.
func (s *KVStore) Synced() bool { return s.synced.Load() }

func (s *KVStore) remember(key, aor, contact string) {
	s.keysMu.Lock()
	s.keys[key] = keyOwner{aor: aor, contact: contact}
	s.keysMu.Unlock()
}

func (s *KVStore) forget(key string) (keyOwner, bool) {
	s.keysMu.Lock()
	owner, ok := s.keys[key]
	delete(s.keys, key)
	s.keysMu.Unlock()
	return owner, ok
}

// Run watches the bucket into the local replica and sweeps lapsed bindings
// until ctx ends. It returns only after its goroutines have exited.
func (s *KVStore) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.sweepLoop(ctx) })
	for ctx.Err() == nil {
		if err := s.watch(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("location watch interrupted")
		}
		select {
		case <-ctx.Done():
		case <-time.After(kvWatchRetry):
		}
	}
	wg.Wait()
	return nil
}

func (s *KVStore) watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch location bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case entry, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			s.apply(ctx, entry)
		}
	}
}

func (s *KVStore) apply(ctx context.Context, entry jetstream.KeyValueEntry) {
	if entry == nil {
		// The watcher delivers nil once it has replayed the current values.
		s.synced.Store(true)
		return
	}
	switch entry.Operation() {
	case jetstream.KeyValuePut:
		var b Binding
		if err := json.Unmarshal(entry.Value(), &b); err != nil {
			s.log.Debug().Err(err).Str("key", entry.Key()).Msg("skip undecodable binding")
			return
		}
		s.remember(entry.Key(), b.AOR, b.Contact)
		_ = s.local.Save(ctx, b)
	default:
		if owner, ok := s.forget(entry.Key()); ok {
			_ = s.local.Remove(ctx, owner.aor, owner.contact)
		}
	}
}

func (s *KVStore) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep(ctx)
		}
	}
}

// Sweep deletes lapsed bindings from the bucket. Every replica may sweep:
// deleting a key twice is harmless.
func (s *KVStore) Sweep(ctx context.Context) {
	for _, b := range s.local.Expired() {
		if err := s.deleteLapsed(ctx, bindingKey(b.AOR, b.Contact)); err != nil {
			s.log.Debug().Err(err).Str("aor", b.AOR).Msg("sweep binding")
		}
	}
	// Only what is still lapsed goes: the watcher may have delivered a
	// refresh since Expired was taken.
	s.local.PruneExpired()
}

// deleteLapsed deletes key only while the bucket still holds a lapsed
// binding there. That this replica's copy has lapsed proves nothing about
// the bucket: the phone may have refreshed through another replica a moment
// ago, and the watcher not delivered it yet. The delete is conditional on
// the revision read, so a refresh landing in between survives as well.
func (s *KVStore) deleteLapsed(ctx context.Context, key string) error {
	entry, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get %s: %w: %w", key, ErrUnavailable, err)
	}
	var b Binding
	if err := json.Unmarshal(entry.Value(), &b); err == nil && !b.Expired(time.Now()) {
		return nil
	}
	err = s.kv.Delete(ctx, key, jetstream.LastRevision(entry.Revision()))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s: %w: %w", key, ErrUnavailable, err)
	}
	return nil
}
