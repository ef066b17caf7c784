package location

import (
	"context"
	"time"
)

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

// Sweep rewrites the records holding lapsed bindings without them. Every
// replica may sweep: the rewrite is a compare-and-set on a fresh read, so
// two sweeps, or a sweep and a refresh through another replica, never undo
// each other.
func (s *KVStore) Sweep(ctx context.Context) {
	for _, aor := range s.local.lapsed(time.Now()) {
		if err := s.dropLapsed(ctx, aor); err != nil {
			s.log.Debug().Err(err).Str("aor", aor).Msg("sweep bindings")
		}
	}
	s.local.prune(time.Now())
}

// dropLapsed removes the lapsed bindings of aor from the bucket, if the
// bucket still has any. That this replica's copy has lapsed proves nothing
// about the bucket: the phone may have refreshed through another replica a
// moment ago, and the watcher not delivered it yet.
func (s *KVStore) dropLapsed(ctx context.Context, aor string) error {
	for range updateAttempts {
		stored, rev, err := s.read(ctx, aor)
		if err != nil {
			return err
		}
		now := time.Now()
		if !hasLapsed(stored, now) {
			// Refreshed elsewhere, or gone from the bucket already: what
			// lapsed here only, prune drops from memory.
			return nil
		}
		err = s.write(ctx, aor, rev, liveBindings(stored, now), now)
		if err == nil || !isRevisionConflict(err) {
			return err
		}
	}
	return ErrConflict
}
