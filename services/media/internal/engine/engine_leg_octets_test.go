package engine

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/pion/rtp"
)

// A sender report's octet count is read on the session's clock goroutine
// (reporter.send, via leg.sent) while the event loop sends RTP to the leg
// (sendRTPTo). Whenever it is read, it is the payload octets of the
// packets sent so far, give or take the one being sent: never a value
// derived from counters a send has updated only some of, which would
// subtract a header or an extension of a packet whose bytes were not yet
// counted and wrap the uint64 to some 2^64 - n (2^32 - n in the SR). Here
// every packet is header and extension only, so the count is 0 at every
// instant; any other value read is wrong.
func TestSentOctetsNeverWrapUnderConcurrentSends(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	s, err := e.lookup("s1")
	if err != nil {
		t.Fatal(err)
	}
	l := s.legs[1]
	// 12-byte header, a 4-byte extension header and 64 bytes of
	// extension: no payload at all.
	h := rtp.Header{Version: 2, PayloadType: 0, SSRC: 9}
	if err := h.SetExtension(1, make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	pkt, err := (&rtp.Packet{Header: h}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got := rtpOverhead(pkt); got != len(pkt)-rtpHeaderLen {
		t.Fatalf("test packet: overhead %d of %d bytes", got, len(pkt))
	}
	// A closed local port: writes succeed on loopback and nothing reads
	// them, so the test measures only the counters.
	dst := netip.MustParseAddrPort("127.0.0.1:9")

	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		worst atomic.Uint64
		bad   atomic.Int64
		seen  = map[int64]int{} // the reader's alone until wg.Wait
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if c := l.sent(); c.octets != 0 {
				bad.Add(1)
				seen[int64(c.octets)]++
				if c.octets > worst.Load() {
					worst.Store(c.octets)
				}
			}
		}
	}()
	const packets = 200000
	for range packets {
		l.sendRTPTo(pkt, dst)
	}
	stop.Store(true)
	wg.Wait()
	if final := l.sent(); final.octets != 0 || final.packets != packets {
		t.Fatalf("after the sends: %d packets, %d octets; want %d and 0", final.packets, final.octets, packets)
	}
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d reads of sent() during %d sends gave a payload octet count other than 0, up to %d (%d as the SR's 32 bits); values read (as signed) and how often: %v", n, packets, worst.Load(), uint32(worst.Load()), seen)
	}
}

// The payload octet count is updated with every packet sent, beside the
// packet and byte counts on the leg's first cache line, so counting it
// costs the send path no further memory stall.
func TestPayloadOctetsShareTheLegsFirstCacheLine(t *testing.T) {
	var l leg
	for name, off := range map[string]uintptr{
		"packetsOut": unsafe.Offsetof(l.packetsOut),
		"bytesOut":   unsafe.Offsetof(l.bytesOut),
		"payloadOut": unsafe.Offsetof(l.payloadOut),
	} {
		if off+8 > 64 {
			t.Errorf("leg.%s at offset %d, past the first cache line", name, off)
		}
	}
}
