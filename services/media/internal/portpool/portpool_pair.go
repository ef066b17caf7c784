package portpool

import (
	"sync"

	"callgrid.dev/services/media/internal/udpio"
)

// Pair is one allocated RTP/RTCP socket pair.
type Pair struct {
	RTP  *udpio.Socket
	RTCP *udpio.Socket
	Port int // RTP port; RTCP is Port+1

	pool     *Pool
	index    int
	freeOnce sync.Once
}

// Release closes both sockets and returns the ports to the pool. Its owner
// calls it once nothing reads the sockets any more, so a new call can never
// bind a port a stale reader still holds. It is safe to call more than once.
func (p *Pair) Release() {
	p.freeOnce.Do(func() {
		_ = p.RTP.Close()
		_ = p.RTCP.Close()
		p.pool.release(p.index)
	})
}
