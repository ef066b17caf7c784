package sipproxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestHandlerPool(t *testing.T) {
	t.Run("a blocked handler does not hold up the next", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newHandlerPool()
			release := make(chan struct{})
			var wg sync.WaitGroup
			// An INVITE waiting for its answer...
			wg.Go(func() { p.run(func() { <-release }) })
			synctest.Wait()
			// ...while another request is served.
			p.run(func() { close(release) })
			wg.Wait()
			p.close()
		})
	})
	t.Run("every job runs once and run waits for it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newHandlerPool()
			var ran atomic.Int32
			var wg sync.WaitGroup
			for range 100 {
				wg.Go(func() {
					done := false
					p.run(func() {
						time.Sleep(time.Millisecond)
						ran.Add(1)
						done = true
					})
					if !done {
						t.Error("run returned before its job")
					}
				})
			}
			wg.Wait()
			if got := ran.Load(); got != 100 {
				t.Errorf("%d jobs ran, want 100", got)
			}
			p.close()
		})
	})
	t.Run("idle goroutines exit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newHandlerPool()
			p.run(func() {})
			time.Sleep(handlerIdle + time.Second)
			synctest.Wait()
			// The worker is gone: a new job starts a new one.
			p.run(func() {})
			// synctest.Test fails if a goroutine of the bubble is left
			// blocked when it returns, so close must end the worker.
			p.close()
		})
	})
}
