package portpool

import (
	"net"
	"sync"
)

// Pair is one allocated RTP/RTCP socket pair.
type Pair struct {
	RTP  *net.UDPConn
	RTCP *net.UDPConn
	Port int // RTP port; RTCP is Port+1

	pool      *Pool
	index     int
	closeOnce sync.Once
	freeOnce  sync.Once
}

// Close closes both sockets but keeps the ports reserved. Closing unblocks
// readers; the owner releases the ports only after its readers have exited,
// so a new call can never bind a port a stale reader still holds.
func (p *Pair) Close() {
	p.closeOnce.Do(func() {
		p.RTP.Close()
		p.RTCP.Close()
	})
}

// Release closes both sockets (if not yet closed) and returns the ports to
// the pool. It is safe to call more than once.
func (p *Pair) Release() {
	p.Close()
	p.freeOnce.Do(func() { p.pool.release(p.index) })
}
