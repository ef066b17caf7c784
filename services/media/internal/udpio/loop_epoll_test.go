//go:build linux && !udpio_portable

package udpio

import (
	"net/netip"
	"testing"
	"time"
)

// Sockets on one loop are served one handler at a time; a removed
// socket's descriptor number may be reused by a new socket at once.
func TestSocketsShareTheLoopAndDescriptorsAreReused(t *testing.T) {
	l := newLoop(t)
	c := peer(t)
	for round := range 20 {
		s, err := Listen(loopback)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan byte, 1)
		if err := l.Add(s, HandlerFunc(func(pkt []byte, _ netip.AddrPort, _ time.Time) { got <- pkt[0] })); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDPAddrPort([]byte{byte(round)}, addrOf(s)); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if b != byte(round) {
				t.Fatalf("round %d: handler got a datagram of round %d", round, b)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: nothing delivered", round)
		}
		l.Remove(s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
