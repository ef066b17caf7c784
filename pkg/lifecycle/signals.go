// Package lifecycle turns process signals into the two stages of a
// graceful stop: the first SIGTERM or SIGINT asks the service to drain, a
// second one asks it to stop at once.
package lifecycle

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Signals returns a context cancelled by the first SIGINT/SIGTERM (drain)
// and a channel closed by the second (stop now). Call release to stop
// listening.
func Signals() (drain context.Context, hard <-chan struct{}, release func()) {
	ctx, cancel := context.WithCancel(context.Background())
	hardCh := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		count := 0
		for {
			select {
			case <-sigs:
				count++
				if count == 1 {
					cancel()
				} else {
					close(hardCh)
					return
				}
			case <-done:
				return
			}
		}
	}()
	return ctx, hardCh, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}
