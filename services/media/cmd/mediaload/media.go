package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"callgrid.dev/services/media/internal/codec"
)

// preparedFrames is one second of audio: the streams cycle through it, so
// the generator never encodes while it runs.
const preparedFrames = 50

// preparedMedia holds the payloads the endpoints send.
type preparedMedia struct {
	pcmu [][]byte // 8 kHz PCMU, what leg A sends
	opus [][]byte // Opus as a wideband phone sends it, what leg B sends in transcode mode
}

// speechLike fills pcm (at rate) with a voiced, syllable-modulated signal
// with a little noise, closer to what an encoder sees in a call than a pure
// tone (which Opus encodes unusually cheaply).
func speechLike(rate, offset int, pcm []int16) {
	seed := uint32(offset*2654435761 + 1)
	for i := range pcm {
		t := float64(offset+i) / float64(rate)
		pitch := 120 + 30*math.Sin(2*math.Pi*0.7*t)
		env := 0.5 + 0.5*math.Sin(2*math.Pi*4*t) // ~4 syllables per second
		var v float64
		for h := 1; h <= 12 && float64(h)*pitch < float64(rate)/2; h++ {
			formant := math.Exp(-math.Pow((float64(h)*pitch-700)/600, 2))
			v += (0.3 + formant) / float64(h) * math.Sin(2*math.Pi*float64(h)*pitch*t)
		}
		seed = seed*1664525 + 1013904223
		noise := (float64(seed>>16)/65536 - 0.5) * 0.05
		pcm[i] = int16(math.Max(-32767, math.Min(32767, 6000*(env*v+noise))))
	}
}

func prepareMedia(opts codec.OpusOptions) (*preparedMedia, error) {
	m := &preparedMedia{}
	pcmu, err := codec.NewEncoder(codec.PCMU, 8000, opts)
	if err != nil {
		return nil, fmt.Errorf("prepare pcmu: %w", err)
	}
	defer pcmu.Close()
	// Leg B's phone: Opus at 16 kHz with the node's own encoder settings.
	opus, err := codec.NewEncoder(codec.Opus, 16000, opts)
	if err != nil {
		return nil, fmt.Errorf("prepare opus: %w", err)
	}
	defer opus.Close()
	pcm8 := make([]int16, codec.FrameSamplesAt(8000))
	pcm16 := make([]int16, codec.FrameSamplesAt(16000))
	buf := make([]byte, codec.OpusMaxPacketBytes)
	for i := range preparedFrames {
		speechLike(8000, i*len(pcm8), pcm8)
		n, err := pcmu.Encode(pcm8, buf)
		if err != nil {
			return nil, fmt.Errorf("prepare pcmu: %w", err)
		}
		m.pcmu = append(m.pcmu, slices.Clone(buf[:n]))
		speechLike(16000, i*len(pcm16), pcm16)
		if n, err = opus.Encode(pcm16, buf); err != nil {
			return nil, fmt.Errorf("prepare opus: %w", err)
		}
		m.opus = append(m.opus, slices.Clone(buf[:n]))
	}
	return m, nil
}

func maxFrameLen(frames [][]byte) int {
	n := 0
	for _, f := range frames {
		n = max(n, len(f))
	}
	return n
}

// codecOnly is the libopus-bound limit of a transcoded PCMU↔Opus call: the
// CPU time of the codec work one call needs per 20 ms, as the node does it
// (PCMU decode + Opus encode at 8 kHz one way, Opus decode at 8 kHz + PCMU
// encode the other way), on one thread, over a number of calls' codec
// states used in turn: one state stays hot in the caches, while a node
// with a hundred calls finds each call's state evicted by the others.
type codecOnly struct {
	perFrame     time.Duration // CPU per 20 ms of one call, median of the rounds
	callsPerCore float64
	rounds       []time.Duration
}

// callCodecs is one transcoded call's codec state.
type callCodecs struct {
	pcmuDec, opusDec codec.Decoder
	opusEnc, pcmuEnc codec.Encoder
}

func newCallCodecs(opts codec.OpusOptions) (*callCodecs, error) {
	c := &callCodecs{}
	var err error
	if c.pcmuDec, err = codec.NewDecoder(codec.PCMU, 8000); err != nil {
		return nil, err
	}
	if c.opusDec, err = codec.NewDecoder(codec.Opus, 8000); err != nil {
		return nil, err
	}
	if c.opusEnc, err = codec.NewEncoder(codec.Opus, 8000, opts); err != nil {
		c.opusDec.Close()
		return nil, err
	}
	if c.pcmuEnc, err = codec.NewEncoder(codec.PCMU, 8000, opts); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *callCodecs) close() {
	c.opusDec.Close()
	c.opusEnc.Close()
}

func measureCodecOnly(m *preparedMedia, opts codec.OpusOptions, states, rounds, framesPerRound int) (codecOnly, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	calls := make([]*callCodecs, 0, states)
	defer func() {
		for _, c := range calls {
			c.close()
		}
	}()
	for range max(states, 1) {
		c, err := newCallCodecs(opts)
		if err != nil {
			return codecOnly{}, err
		}
		calls = append(calls, c)
	}
	frame := newCodecWork(m, calls).frame
	for i := range max(preparedFrames, 3*len(calls)) { // warm up every state
		if err := frame(i); err != nil {
			return codecOnly{}, fmt.Errorf("codec-only frame: %w", err)
		}
	}
	var res codecOnly
	for range rounds {
		start := threadCPU()
		for i := range framesPerRound {
			if err := frame(i); err != nil {
				return codecOnly{}, fmt.Errorf("codec-only frame: %w", err)
			}
		}
		res.rounds = append(res.rounds, (threadCPU()-start)/time.Duration(framesPerRound))
	}
	sorted := slices.Clone(res.rounds)
	slices.Sort(sorted)
	res.perFrame = sorted[len(sorted)/2]
	res.callsPerCore = float64(frameMillis*time.Millisecond) / float64(res.perFrame)
	return res, nil
}

// codecWork is a transcoded call's codec work per 20 ms, over given calls'
// states used in turn.
type codecWork struct {
	m     *preparedMedia
	calls []*callCodecs
	pcm   []int16
	out   []byte
}

func newCodecWork(m *preparedMedia, calls []*callCodecs) *codecWork {
	return &codecWork{m: m, calls: calls, pcm: make([]int16, 2*codec.FrameSamplesAt(48000)), out: make([]byte, codec.OpusMaxPacketBytes)}
}

// frame does the i-th frame's work with the state of call i.
func (w *codecWork) frame(i int) error {
	c := w.calls[i%len(w.calls)]
	n, err := c.pcmuDec.Decode(w.m.pcmu[i%len(w.m.pcmu)], w.pcm)
	if err != nil {
		return err
	}
	if _, err := c.opusEnc.Encode(w.pcm[:n], w.out); err != nil {
		return err
	}
	if n, err = c.opusDec.Decode(w.m.opus[i%len(w.m.opus)], w.pcm); err != nil {
		return err
	}
	_, err = c.pcmuEnc.Encode(w.pcm[:n], w.out)
	return err
}

// sampleCodecDuring measures the codec-only cost in short rounds, one
// every interval, until stop is closed: the machine's speed moves within
// seconds, and only a figure taken during a step is taken at the speed
// the node ran at. It runs on the node's CPU, so a round holds the node
// off that CPU while it lasts: a round of one frame to warm the state and
// five measured (about a millisecond) keeps the node's packets from
// queueing behind it, where rounds of 45 frames (7 ms) every 500 ms added
// 2–5 ms to the p99 of the transcode steps and several times that near
// the node's limit. One call's state is kept hot between rounds.
func sampleCodecDuring(m *preparedMedia, opts codec.OpusOptions, interval time.Duration, stop <-chan struct{}) ([]time.Duration, error) {
	const warm, frames = 1, 5
	c, err := newCallCodecs(opts)
	if err != nil {
		return nil, err
	}
	defer c.close()
	w := newCodecWork(m, []*callCodecs{c})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var rounds []time.Duration
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-stop:
			return rounds, nil
		case <-tick.C:
		}
		for range warm {
			if err := w.frame(i); err != nil {
				return nil, fmt.Errorf("codec-only frame: %w", err)
			}
			i++
		}
		start := threadCPU()
		for range frames {
			if err := w.frame(i); err != nil {
				return nil, fmt.Errorf("codec-only frame: %w", err)
			}
			i++
		}
		rounds = append(rounds, (threadCPU()-start)/frames)
	}
}

// threadCPU is the CPU time of the calling OS thread: unlike wall time it
// does not count the time other processes on the shared machine take.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
