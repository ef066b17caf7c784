package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The generator plays every leg's endpoint from a handful of UDP sockets:
// each socket stands for many legs (the node sees the same source address
// on many of its legs, which costs it nothing extra), so the generator can
// batch its system calls with sendmmsg/recvmmsg and stay cheap next to the
// node it measures. The node still has its own socket pair per leg.
const (
	socketBuffer = 4 << 20
	sendBatch    = 8 // packets per sendmmsg, sharing one send timestamp
	recvBatch    = 64
	recvPoll     = time.Millisecond // receive polling interval
	maxDatagram  = 1500
)

// endpointSocket is one generator UDP socket on loopback.
type endpointSocket struct {
	fd   int
	port int
}

func openEndpointSocket() (*endpointSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open udp socket: %w", err)
	}
	fail := func(what string, err error) (*endpointSocket, error) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fail("bind udp socket", err)
	}
	for _, o := range []struct {
		name     string
		opt, val int
		optional bool
	}{
		{"SO_RCVBUF", unix.SO_RCVBUF, socketBuffer, true},
		{"SO_SNDBUF", unix.SO_SNDBUF, socketBuffer, true},
		{"SO_TIMESTAMPNS", unix.SO_TIMESTAMPNS, 1, false},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.val); err != nil && !o.optional {
			return fail("set "+o.name, err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	return &endpointSocket{fd: fd, port: sa.(*unix.SockaddrInet4).Port}, nil
}

func (s *endpointSocket) close() { _ = unix.Close(s.fd) }

// pacer sends every active stream's packet once per 20 ms, spreading the
// streams evenly over the slots of a frame, from one goroutine.
type pacer struct {
	mu      sync.Mutex
	slot    time.Duration
	slots   []map[int][]*stream // slot → socket fd → streams
	running atomic.Bool
	n       int // streams added

	sent       atomic.Uint64
	sendErrors atomic.Uint64
	late       atomic.Uint64 // slots started more than a slot late

	msgs [sendBatch]unix.Mmsghdr
	iovs [sendBatch]unix.Iovec
}

func newPacer(slot time.Duration) *pacer {
	n := max(int(frameMillis*time.Millisecond/slot), 1)
	p := &pacer{slot: frameMillis * time.Millisecond / time.Duration(n), slots: make([]map[int][]*stream, n)}
	for i := range p.slots {
		p.slots[i] = map[int][]*stream{}
	}
	return p
}

// add schedules a stream; call it while the pacer is paused or running.
func (p *pacer) add(s *stream) {
	p.mu.Lock()
	slot := p.n % len(p.slots)
	p.slots[slot][s.sendFD] = append(p.slots[slot][s.sendFD], s)
	p.n++
	p.mu.Unlock()
}

// run paces until ctx ends. While paused it keeps time but sends nothing.
func (p *pacer) run(ctx context.Context) {
	slot := p.slot
	next := time.Now()
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(p.slots) {
		next = next.Add(slot)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else if d < -slot {
			p.late.Add(1)
			if d < -frameMillis*time.Millisecond {
				// Far behind (the machine stalled): do not burst to
				// catch up, restart the clock.
				next = time.Now()
			}
		}
		if !p.running.Load() {
			continue
		}
		p.mu.Lock()
		for fd, streams := range p.slots[i] {
			for start := 0; start < len(streams); start += sendBatch {
				p.sendBatch(fd, streams[start:min(start+sendBatch, len(streams))])
			}
		}
		p.mu.Unlock()
	}
}

func (p *pacer) sendBatch(fd int, streams []*stream) {
	var indexes [sendBatch]uint16
	for k, s := range streams {
		pkt, i := s.next()
		indexes[k] = i
		p.iovs[k].Base = &pkt[0]
		p.iovs[k].SetLen(len(pkt))
		p.msgs[k].Hdr.Name = (*byte)(unsafe.Pointer(&s.dst))
		p.msgs[k].Hdr.Namelen = unix.SizeofSockaddrInet4
		p.msgs[k].Hdr.Iov = &p.iovs[k]
		p.msgs[k].Hdr.SetIovlen(1)
	}
	// Stamped before the call: a packet may be forwarded back before
	// sendmmsg returns. The kernel sends a batch one packet after another,
	// each taking a few µs with its delivery into the node's socket, so
	// the last of a batch leaves up to about 20 µs after the stamp, which
	// its latency then includes. The batch is kept small for that reason.
	now := time.Now().UnixNano()
	for k, s := range streams {
		s.sentAt[indexes[k]%sentRing].Store(now)
	}
	done := 0
	for done < len(streams) {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&p.msgs[done])), uintptr(len(streams)-done), 0, 0, 0)
		if errno != 0 {
			if errno == unix.EINTR {
				continue
			}
			// The rest of the batch is lost on our side.
			p.sendErrors.Add(uint64(len(streams) - done))
			break
		}
		done += int(n)
	}
	p.sent.Add(uint64(done))
}

// receiver reads one generator socket and accounts what the node forwarded
// to it. One goroutine polls all receivers (pollReceivers).
type receiver struct {
	sock   *endpointSocket
	byPort *[65536]atomic.Pointer[stream] // node's sending port → stream

	msgs  [recvBatch]unix.Mmsghdr
	iovs  [recvBatch]unix.Iovec
	names [recvBatch]unix.RawSockaddrInet4
	bufs  [recvBatch][maxDatagram]byte
	ctrl  [recvBatch][64]byte

	measuring *atomic.Bool
	mu        sync.Mutex // guards hist
	hist      *histogram

	// noStamp counts packets without a kernel timestamp, timed at read
	// instead (none expected on Linux).
	received, reordered, rtcp, unknown, noStamp atomic.Uint64
}

func newReceiver(sock *endpointSocket, byPort *[65536]atomic.Pointer[stream], measuring *atomic.Bool) *receiver {
	r := &receiver{sock: sock, byPort: byPort, measuring: measuring, hist: newHistogram()}
	for i := range r.msgs {
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(maxDatagram)
		r.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.msgs[i].Hdr.Iov = &r.iovs[i]
		r.msgs[i].Hdr.SetIovlen(1)
		r.msgs[i].Hdr.Control = &r.ctrl[i][0]
	}
	return r
}

// pollReceivers drains every socket once per interval until ctx ends.
// Arrival times come from the kernel (SO_TIMESTAMPNS), so reading late
// does not add to the measured latency, and one wake-up per interval
// instead of one per packet keeps the generator cheap. It also spares the
// node's sends the cost of waking a blocked reader, which a NIC send would
// not pay either.
func pollReceivers(ctx context.Context, rs []*receiver, interval time.Duration) error {
	for ctx.Err() == nil {
		for _, r := range rs {
			if err := r.drain(); err != nil {
				return err
			}
		}
		time.Sleep(interval)
	}
	return nil
}

// drain reads everything queued on the socket.
func (r *receiver) drain() error {
	dataOff := unix.CmsgLen(0)
	for {
		for i := range r.msgs {
			r.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
			r.msgs[i].Hdr.SetControllen(len(r.ctrl[i]))
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(r.sock.fd), uintptr(unsafe.Pointer(&r.msgs[0])), recvBatch, unix.MSG_DONTWAIT, 0, 0)
		if errno != 0 {
			if errno == unix.EAGAIN || errno == unix.EINTR {
				return nil
			}
			return fmt.Errorf("recvmmsg on port %d: %w", r.sock.port, errno)
		}
		fallback := time.Now().UnixNano()
		measuring := r.measuring.Load()
		if measuring {
			r.mu.Lock()
		}
		for i := range int(n) {
			pkt := r.bufs[i][:r.msgs[i].Len]
			if len(pkt) < rtpHeaderLen || pkt[0]>>6 != 2 {
				r.unknown.Add(1)
				continue
			}
			if pkt[1] >= 192 && pkt[1] <= 223 {
				r.rtcp.Add(1) // the node's own reports on transcoded legs (rtcp-mux)
				continue
			}
			port := (*[2]byte)(unsafe.Pointer(&r.names[i].Port))
			s := r.byPort[int(port[0])<<8|int(port[1])].Load()
			if s == nil {
				r.unknown.Add(1)
				continue
			}
			at := fallback
			h := (*unix.Cmsghdr)(unsafe.Pointer(&r.ctrl[i][0]))
			if uint64(r.msgs[i].Hdr.Controllen) >= uint64(dataOff+16) && h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS {
				ts := (*unix.Timespec)(unsafe.Pointer(&r.ctrl[i][dataOff]))
				at = ts.Nano()
			} else {
				r.noStamp.Add(1)
			}
			idx, reordered := s.receive(uint16(pkt[2])<<8 | uint16(pkt[3]))
			r.received.Add(1)
			if reordered {
				r.reordered.Add(1)
			}
			if measuring {
				r.hist.record(at - s.sentAt[idx%sentRing].Load())
			}
		}
		if measuring {
			r.mu.Unlock()
		}
		if int(n) < recvBatch {
			return nil
		}
	}
}

// takeHistogram returns the latencies recorded so far and starts afresh.
func (r *receiver) takeHistogram() *histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hist
	r.hist = newHistogram()
	return h
}

// portBytes points at a raw socket address's port, which is in network
// byte order.
func portBytes(sa *unix.RawSockaddrInet4) unsafe.Pointer { return unsafe.Pointer(&sa.Port) }
