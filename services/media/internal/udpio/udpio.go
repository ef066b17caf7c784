// Package udpio moves the datagrams of many UDP sockets through a few event
// loops, one per core, instead of a goroutine per socket.
//
// A media node holds two sockets per leg and each sees one packet every
// 20 ms. With a goroutine blocked on every socket, each packet costs a
// netpoller wake-up, a goroutine switch and a second read that finds the
// socket empty before the goroutine parks again; at a few thousand calls
// that scheduling is as expensive as the packet I/O itself. On Linux a loop
// waits on an epoll set of many sockets and reads exactly once per ready
// socket, so the wake-up is shared by every packet that arrived meanwhile
// and the per-packet cost is one receive and one send system call.
//
// Its sockets are plain non-blocking file descriptors kept out of the Go
// runtime's poller: were they registered there as well, every datagram
// would also wake the runtime's own epoll for nothing.
//
// Other systems get a portable loop with a reader goroutine per socket:
// slower, with the same guarantees. The udpio_portable build tag selects
// it on Linux as well, so that it is tested there.
package udpio

import "errors"

// MaxDatagram is the largest datagram read; longer ones are dropped, and
// the loop's readErr told of each with ErrTruncated.
const MaxDatagram = 2048

// ErrClosed is returned when writing to, or adding, a closed socket.
var ErrClosed = errors.New("udp socket closed")

// ErrLoopClosed is returned by Add once the loop has stopped.
var ErrLoopClosed = errors.New("udp event loop closed")

// errInLoop is returned by Add for a socket that a loop already reads.
var errInLoop = errors.New("udp socket already added to a loop")

// ErrTruncated is what a loop's readErr is told of a datagram longer than
// MaxDatagram, which it drops.
var ErrTruncated = errors.New("udp datagram longer than MaxDatagram dropped")
