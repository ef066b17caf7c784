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
		ex := &expiry{done: make(chan struct{})}
		e.mu.Lock()
		e.expiring[x.s.id] = ex
		e.mu.Unlock()
		x.s.log.Info().Stringer("silent_leg", x.leg).Msg("media timeout")
		ex.q = e.finish(x.s, "media timeout")
		close(ex.done)
		if e.onTimeout != nil {
			e.onTimeout(x.s.id, ex.q)
		}
		e.mu.Lock()
		delete(e.expiring, x.s.id)
		e.mu.Unlock()
	}
}

// expiry is a session being ended for a media timeout; q is valid once
// done is closed.
type expiry struct {
	done chan struct{}
	q    Quality
}

// expiringQuality waits for a session the sweeper is ending and returns
// its quality, or reports that none is being ended.
func (e *Engine) expiringQuality(id string) (Quality, bool) {
	e.mu.Lock()
	ex := e.expiring[id]
	e.mu.Unlock()
	if ex == nil {
		return Quality{}, false
	}
	<-ex.done
	return ex.q, true
}
