package location

import (
	"context"
	"errors"
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
//
// A bus that is away ends the pass: each further AOR would only wait out
// its own request timeout, holding up the prune behind it for as long as
// that takes over every lapsed AOR; the next pass retries them all.
func (s *KVStore) Sweep(ctx context.Context) {
	lapsed := s.local.lapsed(time.Now())
	for i, aor := range lapsed {
		err := s.dropLapsed(ctx, aor)
		if errors.Is(err, ErrUnavailable) {
			s.log.Warn().Err(err).Int("aors_left", len(lapsed)-i).Msg("location sweep stopped")
			break
		}
		if err != nil {
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
		live := liveBindings(stored, now)
		err = s.write(ctx, aor, rev, live, now)
		if err == nil {
			s.m.expired.Add(float64(len(stored) - len(live)))
			return nil
		}
		if !isRevisionConflict(err) {
			return err
		}
	}
	return ErrConflict
}
