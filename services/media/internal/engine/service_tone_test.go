package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// The tone goes out at the packet time the caller's SDP asks for when its
// codec can carry it (G.711 and G.722 in whole 10 ms, Opus in 20, 40 or
// 60 ms) within its a=maxptime, else at 20 ms (or less, for a maxptime
// under it): each packet holds that much audio, and the timestamps move
// on by as much.
func TestToneFollowsThePacketTimeAskedFor(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	tests := []struct {
		name   string
		sdp    []string
		codec  codec.Name
		rate   int // what the tone is decoded at
		pt     uint8
		ms     int // the packet time expected
		octets int // the payload size expected; 0 for Opus, which varies
	}{
		{name: "PCMU 10 ms", sdp: []string{"0", "a=ptime:10"}, codec: codec.PCMU, rate: 8000, pt: 0, ms: 10, octets: 80},
		{name: "PCMU 30 ms", sdp: []string{"0", "a=ptime:30"}, codec: codec.PCMU, rate: 8000, pt: 0, ms: 30, octets: 240},
		{name: "PCMA 60 ms", sdp: []string{"8", "a=ptime:60"}, codec: codec.PCMA, rate: 8000, pt: 8, ms: 60, octets: 480},
		{name: "G.722 30 ms", sdp: []string{"9", "a=ptime:30"}, codec: codec.G722, rate: 16000, pt: 9, ms: 30, octets: 240},
		{name: "Opus 40 ms", sdp: []string{"111", opus48, "a=ptime:40"}, codec: codec.Opus, rate: 48000, pt: 111, ms: 40},
		{name: "Opus 60 ms", sdp: []string{"111", opus48, "a=ptime:60"}, codec: codec.Opus, rate: 48000, pt: 111, ms: 60},
		{name: "PCMU 25 ms is not whole 10 ms: 20", sdp: []string{"0", "a=ptime:25"}, codec: codec.PCMU, rate: 8000, pt: 0, ms: 20, octets: 160},
		{name: "Opus 10 ms has no encoder: 20", sdp: []string{"111", opus48, "a=ptime:10"}, codec: codec.Opus, rate: 48000, pt: 111, ms: 20},
		{name: "PCMU within a 10 ms maxptime", sdp: []string{"0", "a=maxptime:10"}, codec: codec.PCMU, rate: 8000, pt: 0, ms: 10, octets: 80},
		{name: "PCMA 60 ms past a 40 ms maxptime: 20", sdp: []string{"8", "a=ptime:60", "a=maxptime:40"}, codec: codec.PCMA, rate: 8000, pt: 8, ms: 20, octets: 160},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a := newEndpoint(t)
			if _, err := e.Offer(context.Background(), OfferParams{SessionID: "tone", SDP: a.sdp(tc.sdp[0], tc.sdp[1:]...), Service: ServiceTone}); err != nil {
				t.Fatal(err)
			}
			info, _ := codec.Lookup(string(tc.codec))
			tsStep := uint32(info.ClockRate * tc.ms / 1000)
			dec, err := codec.NewDecoder(tc.codec, tc.rate)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			// 120 ms of tone at least: enough for the tone check.
			packets := max(3, 120/tc.ms)
			pcm := make([]int16, 6000)
			var tone []int16
			var prevSeq uint16
			var prevTS uint32
			for i := range packets {
				p, ok := a.recv(2 * time.Second)
				if !ok {
					t.Fatalf("received %d of %d packets", i, packets)
				}
				if p.PayloadType != tc.pt || (tc.octets > 0 && len(p.Payload) != tc.octets) {
					t.Fatalf("packet %d: payload type %d, %d octets; want %d, %d", i, p.PayloadType, len(p.Payload), tc.pt, tc.octets)
				}
				if i > 0 && (p.SequenceNumber != prevSeq+1 || p.Timestamp-prevTS != tsStep) {
					t.Fatalf("packet %d: seq %d→%d, ts %d→%d; want timestamps %d apart", i, prevSeq, p.SequenceNumber, prevTS, p.Timestamp, tsStep)
				}
				prevSeq, prevTS = p.SequenceNumber, p.Timestamp
				n, err := dec.Decode(p.Payload, pcm)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				if want := tc.rate * tc.ms / 1000; n != want {
					t.Fatalf("packet %d holds %d samples at %d Hz, want %d ms", i, n, tc.rate, tc.ms)
				}
				tone = append(tone, pcm[:n]...)
			}
			checkTone(t, tone, tc.rate)
		})
	}
}

// A re-INVITE that asks for another packet time moves the tone to it, its
// timestamps and its pace with it.
func TestToneFollowsAReInvitesPacketTime(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a := newEndpoint(t)
	ctx := context.Background()
	if _, err := e.Offer(ctx, OfferParams{SessionID: "tone", SDP: a.sdp("0"), Service: ServiceTone}); err != nil {
		t.Fatal(err)
	}
	if p, ok := a.recv(2 * time.Second); !ok || len(p.Payload) != 160 {
		t.Fatalf("tone before the re-INVITE: ok %v, %d octets; want 20 ms", ok, len(p.Payload))
	}
	if _, _, err := e.Update(ctx, "tone", LegA, a.sdp("0", "a=ptime:40"), false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	var got []rtp.Packet
	for len(got) < 3 && time.Now().Before(deadline) {
		p, ok := a.recv(time.Until(deadline))
		if ok && len(p.Payload) == 320 {
			got = append(got, p)
		}
	}
	if len(got) < 3 {
		t.Fatalf("%d packets of 40 ms after the re-INVITE, want 3", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].SequenceNumber != got[i-1].SequenceNumber+1 || got[i].Timestamp-got[i-1].Timestamp != 320 {
			t.Fatalf("40 ms packets: seq %d→%d, ts %d→%d", got[i-1].SequenceNumber, got[i].SequenceNumber, got[i-1].Timestamp, got[i].Timestamp)
		}
	}
}

// The tone goes out one packet per tick however late each tick runs, at
// any packet time, and its clock ticks once a packet. A run (the first,
// or the one a re-INVITE's codec change starts) begins at a tick, late by
// however long that tick was; ticks after it are as often a little less
// late: those must not be taken for before their packets' time, which
// would send none on one and two on the next, a gap and a burst, for as
// long as the run lasts.
func TestTonePacingFollowsLateTicks(t *testing.T) {
	a := newEndpoint(t)
	for _, tc := range []struct {
		codec string
		every time.Duration
	}{
		{"PCMU", 20 * time.Millisecond},
		{"PCMU", 10 * time.Millisecond},
		{"PCMU", 30 * time.Millisecond},
		{"opus", 60 * time.Millisecond},
	} {
		t.Run(tc.codec+" "+tc.every.String(), func(t *testing.T) {
			s := toneSession(t, a, tc.codec, tc.every)
			info, _ := codec.Lookup(tc.codec)

			p := newTonePlayer()
			clock := newToneClock(p)
			defer clock.stop()
			start := time.Now()
			ticks := uint32(int64(info.ClockRate) * int64(tc.every) / int64(time.Second))
			lateness := []time.Duration{500, 300, 700, 200, 600, 100, 400, 800, 300, 250} // µs
			for i, late := range lateness {
				before, ts := p.sent, p.out.ts
				clock.tick(s, start.Add(time.Duration(i)*tc.every+late*time.Microsecond))
				if sent := p.sent - before; sent != 1 {
					t.Fatalf("tick %d, %d µs late, sent %d packets, want 1", i, late, sent)
				}
				if i > 0 && p.out.ts-ts != ticks {
					t.Fatalf("tick %d: timestamp moved %d, want %d", i, p.out.ts-ts, ticks)
				}
			}
			if clock.every != tc.every {
				t.Fatalf("the tone clock ticks every %v, want %v", clock.every, tc.every)
			}
		})
	}
}

// A packet skipped while the caller is on hold moves the tone on as if it
// had been sent: the packet after it is the one that would have followed.
func TestToneSkipKeepsTheStream(t *testing.T) {
	info, _ := codec.Lookup("PCMU")
	sent, skipped := make([]byte, 1500), make([]byte, 1500)
	var third [2][]byte
	for i, skip := range []bool{false, true} {
		src, err := newToneSource(info, 0, 30*time.Millisecond, codec.DefaultOpusOptions())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.close)
		buf := [][]byte{sent, skipped}[i]
		for n := range 3 {
			if skip && n == 1 {
				src.skip()
				continue
			}
			size, err := src.packet(buf)
			if err != nil {
				t.Fatal(err)
			}
			third[i] = buf[:size]
		}
	}
	if !bytes.Equal(third[0], third[1]) {
		t.Fatal("the packet after one skipped is not the one that follows it")
	}
}

// Each re-INVITE that changes the tone's codec or packet time replaces its
// source, and the one replaced is closed then, not when the call ends: a
// caller that re-INVITEs on and on does not pile up encoders. The clock,
// playing throughout, never encodes with one closed under it.
func TestReplacedToneIsClosed(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a := newEndpoint(t)
	ctx := context.Background()
	const opus48 = "a=rtpmap:111 opus/48000/2"
	if _, err := e.Offer(ctx, OfferParams{SessionID: "tone", SDP: a.sdp("111", opus48), Service: ServiceTone}); err != nil {
		t.Fatal(err)
	}
	s, err := e.lookup("tone")
	if err != nil {
		t.Fatal(err)
	}
	dec, err := codec.NewDecoder(codec.Opus, 48000)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	pcm := make([]int16, 6000)
	// waitFor reads the tone until a packet of ms arrives: the clock has
	// taken up the source that sends it.
	waitFor := func(ms int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			p, ok := a.recv(time.Until(deadline))
			if !ok {
				break
			}
			if n, err := dec.Decode(p.Payload, pcm); err == nil && n == 48*ms {
				return
			}
		}
		t.Fatalf("no %d ms tone packet", ms)
	}
	var replaced []*toneSource
	ptimes := []int{40, 60, 20, 40, 60, 20, 40, 60}
	for i, ms := range ptimes {
		old := s.tone.Load()
		if _, _, err := e.Update(ctx, "tone", LegA, a.sdp("111", opus48, fmt.Sprintf("a=ptime:%d", ms)), false); err != nil {
			t.Fatal(err)
		}
		replaced = append(replaced, old)
		if i%2 == 1 {
			// Some are played before the next replaces them, some never.
			waitFor(ms)
		}
	}
	waitFor(ptimes[len(ptimes)-1])
	frame, out := make([]int16, codec.FrameSamplesAt(8000)), make([]byte, codec.OpusMaxPacketBytes)
	for i, src := range replaced {
		if _, err := src.enc.Encode(frame, out); !errors.Is(err, codec.ErrClosed) {
			t.Errorf("the tone replaced by re-INVITE %d is still open: encoding gives %v", i, err)
		}
	}
	if n := s.legs[0].drops[dropCodecError].Load(); n != 0 {
		t.Fatalf("%d tone packets failed to encode", n)
	}
}

// closeCounter is an encoder that only counts its Close calls.
type closeCounter struct {
	codec.Encoder
	closes int
}

func (c *closeCounter) Close() { c.closes++ }

// An Update that took the session up before a Delete ended it may replace
// the tone after the session released its own: each tone is closed once,
// the one replaced by the session's end and the one that came too late
// alike, and never by both at once (two goroutines closing one encoder).
func TestToneReplacedAfterReleaseIsClosedOnce(t *testing.T) {
	s := &session{}
	played, late := &closeCounter{}, &closeCounter{}
	s.tone.Store(&toneSource{enc: played})
	s.release()
	s.replaceTone(&toneSource{enc: late})
	if played.closes != 1 || late.closes != 1 {
		t.Fatalf("the tone played closed %d times, the one replacing it after the session ended %d; want once each", played.closes, late.closes)
	}
}
