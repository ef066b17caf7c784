package engine

import "time"

// sweepInterval is how often sessions are checked for media timeouts: a
// quarter of the shortest timeout, so a dead call ends within 125 % of it,
// bounded so a short test timeout does not spin and a long one is still
// checked every second.
func sweepInterval(cfg Config) time.Duration {
	shortest := cfg.MediaTimeout
	if cfg.HoldTimeout > 0 {
		shortest = min(shortest, cfg.HoldTimeout)
	}
	return min(max(shortest/4, 5*time.Millisecond), time.Second)
}

// sweep ends sessions whose media stopped, until Close.
func (e *Engine) sweep() {
	defer close(e.sweepDone)
	ticker := time.NewTicker(sweepInterval(e.cfg))
	defer ticker.Stop()
	for {
		select {
		case <-e.stopSweep:
			return
		case <-ticker.C:
			e.expire()
		}
	}
}

// expire ends every session with a leg silent past its timeout and tells
// the timeout handler, after the session is released.
func (e *Engine) expire() {
	now := e.now()
	type dead struct {
		s   *session
		leg Leg
	}
	var expired []dead
	e.mu.Lock()
	for _, s := range e.sessions {
		if leg, ok := s.expired(now, e.cfg); ok {
			expired = append(expired, dead{s, leg})
		}
	}
	e.mu.Unlock()
	for _, x := range expired {
		if !e.remove(x.s) {
			continue // deleted meanwhile
		}
		x.s.log.Info().Stringer("silent_leg", x.leg).Msg("media timeout")
		q := e.finish(x.s, "media timeout")
		if e.onTimeout != nil {
			e.onTimeout(x.s.id, q)
		}
	}
}
