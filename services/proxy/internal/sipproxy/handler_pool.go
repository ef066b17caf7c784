package sipproxy

import (
	"sync"
	"time"
)

// handlerIdle is how long a handler goroutine waits for more work before it
// exits.
const handlerIdle = 10 * time.Second

// handlerPool runs request handlers on goroutines that outlive one request.
// sipgo starts a goroutine per message, with a small stack, and the INVITE
// path (routing, the branch loop) grows it several times, copying it each
// time: about a twentieth of the proxy's CPU at 4,000 calls/s. A pooled
// goroutine keeps its grown stack for the next request. The pool grows to
// the number of requests handled at once (an INVITE is handled until its
// final answer) and shrinks as goroutines stay idle.
type handlerPool struct {
	work chan func()
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newHandlerPool() *handlerPool {
	return &handlerPool{work: make(chan func()), stop: make(chan struct{})}
}

// run runs f on a pooled goroutine and returns when f has returned. It must
// not be called after close.
func (p *handlerPool) run(f func()) {
	done := make(chan struct{})
	job := func() {
		defer close(done)
		f()
	}
	select {
	case p.work <- job:
	default:
		p.wg.Add(1)
		go p.worker(job)
	}
	<-done
}

func (p *handlerPool) worker(job func()) {
	defer p.wg.Done()
	idle := time.NewTimer(handlerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(handlerIdle)
		select {
		case job = <-p.work:
		case <-idle.C:
			return
		case <-p.stop:
			return
		}
	}
}

// close stops the idle goroutines and waits for all of them; the caller
// has made sure no run is in progress or will start.
func (p *handlerPool) close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
