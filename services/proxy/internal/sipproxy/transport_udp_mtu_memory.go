package sipproxy

import (
	"sync"
	"time"
)

// A target that silently drops TCP makes every request too large for UDP
// wait out mtuTCPConnectTimeout before it goes over UDP after all: seconds
// of post-dial delay on every video call to that gateway. Once a TCP
// connection there failed, the next large requests go straight over UDP
// for a while, and then TCP is tried again, in case it was a passing fault.
const (
	// tcpFailureMemory is how long a failed TCP connection keeps a target
	// on UDP.
	tcpFailureMemory = 5 * time.Minute
	// tcpFailureTargets bounds the targets remembered: gateways, and the
	// phones whose Contact says transport=tcp. Past it a new failure is
	// not remembered until old ones expire, which costs only the wait.
	tcpFailureTargets = 4096
)

// tcpFailures remembers the targets ("host:port") where a TCP connection
// for a request too large for UDP could not be made, and until when.
type tcpFailures struct {
	now func() time.Time

	mu    sync.Mutex
	until map[string]time.Time
}

func newTCPFailures(now func() time.Time) *tcpFailures {
	return &tcpFailures{now: now, until: make(map[string]time.Time)}
}

// failed records that no TCP connection could be made to dest.
func (f *tcpFailures) failed(dest string) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, known := f.until[dest]; !known && len(f.until) >= tcpFailureTargets {
		f.sweepLocked(now)
		if len(f.until) >= tcpFailureTargets {
			return
		}
	}
	f.until[dest] = now.Add(tcpFailureMemory)
}

// recent reports whether a TCP connection to dest failed within
// tcpFailureMemory.
func (f *tcpFailures) recent(dest string) bool {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	until, ok := f.until[dest]
	if ok && !now.Before(until) {
		delete(f.until, dest)
		return false
	}
	return ok
}

// sweep forgets the failures that expired.
func (f *tcpFailures) sweep() {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweepLocked(now)
}

func (f *tcpFailures) sweepLocked(now time.Time) {
	for dest, until := range f.until {
		if !now.Before(until) {
			delete(f.until, dest)
		}
	}
}
