package udpio

import (
	"net/netip"
	"time"
)

// Handler processes the datagrams read from a socket. pkt is the loop's
// buffer: valid only during the call, and the handler may rewrite it in
// place (a relay forwards it with a new header). at is when the loop read
// it, to within the batch of datagrams read after one wait. The handlers
// of a loop run one at a time, and one at a time with the tasks posted to
// it (Loop.Post), so a handler holds up every other socket of the loop
// while it runs.
//
// An interface rather than a function, so that the object a socket's
// packets are handed to can be one the handler needs anyway: a function
// value would be one more object for every packet to load from memory.
type Handler interface {
	HandleDatagram(pkt []byte, src netip.AddrPort, at time.Time)
}

// Prefetcher is a Handler that can start loading the memory its
// HandleDatagram will touch. For every batch the loop calls Prefetch on all
// the ready sockets' handlers before handling the first datagram, so that
// their cache misses overlap instead of following one another: at
// thousands of sockets, each handler's state has left the cache by the
// time its next datagram comes. Prefetch returns anything computed from
// what it loaded, so that the loads are not optimised away. The portable
// loop reads one datagram at a time and has no batch to prefetch for.
type Prefetcher interface {
	Prefetch() uintptr
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(pkt []byte, src netip.AddrPort, at time.Time)

// HandleDatagram calls f.
func (f HandlerFunc) HandleDatagram(pkt []byte, src netip.AddrPort, at time.Time) {
	f(pkt, src, at)
}
