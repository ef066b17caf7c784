package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/rtp"
)

const frameDuration = 20 * time.Millisecond

// audioCodec encodes and decodes 20 ms frames of mono PCM.
type audioCodec struct {
	name string
	// clock is the RTP clock rate, rate the PCM sample rate.
	clock, rate int
	encode      func(pcm []int16) ([]byte, error)
	decode      func(payload []byte) ([]int16, error)
}

// frameSamples is the PCM samples per frame, clockStep the RTP timestamp step.
func (c *audioCodec) frameSamples() int { return c.rate / 50 }
func (c *audioCodec) clockStep() uint32 { return uint32(c.clock / 50) }

// pcmuCodec is G.711 µ-law at 8 kHz.
func pcmuCodec() *audioCodec {
	return &audioCodec{
		name: "PCMU", clock: 8000, rate: 8000,
		encode: func(pcm []int16) ([]byte, error) {
			out := make([]byte, len(pcm))
			for i, s := range pcm {
				out[i] = linearToULaw(s)
			}
			return out, nil
		},
		decode: func(p []byte) ([]int16, error) {
			out := make([]int16, len(p))
			for i, b := range p {
				out[i] = uLawToLinear(b)
			}
			return out, nil
		},
	}
}

// opusCodec is mono Opus at 48 kHz.
func opusCodec(t *testing.T) *audioCodec {
	t.Helper()
	enc, err := opus.NewEncoder(48000, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := opus.NewDecoder(48000, 1)
	if err != nil {
		t.Fatal(err)
	}
	var encMu, decMu sync.Mutex
	return &audioCodec{
		name: "opus", clock: 48000, rate: 48000,
		encode: func(pcm []int16) ([]byte, error) {
			encMu.Lock()
			defer encMu.Unlock()
			buf := make([]byte, 1000)
			n, err := enc.Encode(pcm, buf)
			if err != nil {
				return nil, err
			}
			return buf[:n], nil
		},
		decode: func(p []byte) ([]int16, error) {
			decMu.Lock()
			defer decMu.Unlock()
			pcm := make([]int16, 5760)
			n, err := dec.Decode(p, pcm)
			if err != nil {
				return nil, err
			}
			return pcm[:n], nil
		},
	}
}

// linearToULaw is G.711 µ-law compression of one 16-bit sample.
func linearToULaw(s int16) byte {
	const bias, clip = 0x84, 32635
	v := int(s)
	sign := 0
	if v < 0 {
		v, sign = -v, 0x80
	}
	v = min(v, clip) + bias
	exp := 7
	for mask := 0x4000; v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (v >> (exp + 3)) & 0x0f
	return ^byte(sign | exp<<4 | mant)
}

// uLawToLinear expands one µ-law byte.
func uLawToLinear(b byte) int16 {
	b = ^b
	sign, exp, mant := int(b&0x80), int(b>>4)&0x07, int(b&0x0f)
	v := ((mant << 3) + 0x84) << exp
	v -= 0x84
	if sign != 0 {
		v = -v
	}
	return int16(v)
}

// rtpEndpoint is a phone's media: it sends a tone and records what arrives.
type rtpEndpoint struct {
	conn    *net.UDPConn
	codec   *audioCodec
	toneHz  float64
	sending atomic.Bool

	mu      sync.Mutex
	peer    *net.UDPAddr
	audioPT uint8
	eventPT uint8
	heard   []int16 // the last second or so of decoded audio
	packets int
	events  map[byte]bool
	dtmf    chan byte
}

func newRTPEndpoint(t *testing.T, codec *audioCodec, toneHz float64) *rtpEndpoint {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &rtpEndpoint{conn: conn, codec: codec, toneHz: toneHz, events: map[byte]bool{}, dtmf: make(chan byte, 4)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(e.receive)
	wg.Go(func() { e.send(stop) })
	t.Cleanup(func() {
		close(stop)
		_ = conn.Close()
		wg.Wait()
	})
	return e
}

func (e *rtpEndpoint) port() int { return e.conn.LocalAddr().(*net.UDPAddr).Port }

// connect points the endpoint at the far side's address and payload types
// and starts (or keeps) sending.
func (e *rtpEndpoint) connect(peer *net.UDPAddr, audioPT, eventPT uint8) {
	e.mu.Lock()
	e.peer, e.audioPT, e.eventPT = peer, audioPT, eventPT
	e.mu.Unlock()
	e.sending.Store(true)
}

// sendDigit sends one RFC 4733 event.
func (e *rtpEndpoint) sendDigit(d byte) { e.dtmf <- d }

func (e *rtpEndpoint) send(stop <-chan struct{}) {
	tick := time.NewTicker(frameDuration)
	defer tick.Stop()
	var ssrcBuf [4]byte
	_, _ = rand.Read(ssrcBuf[:])
	ssrc := binary.BigEndian.Uint32(ssrcBuf[:])
	var seq uint16
	var ts uint32
	phase := 0.0
	step := 2 * math.Pi * e.toneHz / float64(e.codec.rate)
	pcm := make([]int16, e.codec.frameSamples())
	var digit byte
	digitFrames := 0
	var digitTS uint32
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if !e.sending.Load() {
			continue
		}
		e.mu.Lock()
		peer, audioPT, eventPT := e.peer, e.audioPT, e.eventPT
		e.mu.Unlock()
		if peer == nil {
			continue
		}
		if digitFrames == 0 {
			select {
			case digit = <-e.dtmf:
				digitFrames, digitTS = 10, ts
			default:
			}
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}}
		if digitFrames > 0 {
			// 200 ms event: growing duration, the last packet marked end
			// (sent three times, as RFC 4733 recommends).
			digitFrames--
			end := digitFrames == 0
			duration := uint16((10 - digitFrames) * int(e.codec.clockStep()))
			payload := []byte{digit, 10, byte(duration >> 8), byte(duration)}
			if end {
				payload[1] |= 0x80
			}
			pkt.PayloadType, pkt.Timestamp, pkt.Payload = eventPT, digitTS, payload
			pkt.Marker = digitFrames == 9
			copies := 1
			if end {
				copies = 3
			}
			for range copies {
				pkt.SequenceNumber = seq
				seq++
				if b, err := pkt.Marshal(); err == nil {
					_, _ = e.conn.WriteToUDP(b, peer)
				}
			}
			ts += e.codec.clockStep()
			continue
		}
		for i := range pcm {
			pcm[i] = int16(8000 * math.Sin(phase))
			phase += step
		}
		phase = math.Mod(phase, 2*math.Pi)
		payload, err := e.codec.encode(pcm)
		if err != nil {
			continue
		}
		pkt.PayloadType, pkt.Payload = audioPT, payload
		seq++
		ts += e.codec.clockStep()
		if b, err := pkt.Marshal(); err == nil {
			_, _ = e.conn.WriteToUDP(b, peer)
		}
	}
}

func (e *rtpEndpoint) receive() {
	buf := make([]byte, 1500)
	for {
		n, _, err := e.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		var pkt rtp.Packet
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		e.mu.Lock()
		eventPT := e.eventPT
		e.mu.Unlock()
		if pkt.PayloadType == eventPT && eventPT != 0 {
			if len(pkt.Payload) >= 4 {
				e.mu.Lock()
				e.events[pkt.Payload[0]] = true
				e.mu.Unlock()
			}
			continue
		}
		if pkt.PayloadType >= 72 && pkt.PayloadType <= 76 {
			continue // RTCP on a muxed port
		}
		pcm, err := e.codec.decode(pkt.Payload)
		if err != nil {
			continue
		}
		e.mu.Lock()
		e.packets++
		e.heard = append(e.heard, pcm...)
		if keep := e.codec.rate; len(e.heard) > 2*keep {
			e.heard = append(e.heard[:0], e.heard[len(e.heard)-keep:]...)
		}
		e.mu.Unlock()
	}
}

// reset forgets what was heard.
func (e *rtpEndpoint) reset() {
	e.mu.Lock()
	e.heard, e.packets, e.events = nil, 0, map[byte]bool{}
	e.mu.Unlock()
}

func (e *rtpEndpoint) heardDigit(d byte) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.events[d]
}

func (e *rtpEndpoint) received() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.packets
}

// toneShare is the fraction of the energy of the last 200 ms heard that
// lies at hz (Goertzel): about 1 for a clean tone at hz, near 0 for another
// frequency or silence.
func (e *rtpEndpoint) toneShare(hz float64) float64 {
	e.mu.Lock()
	n := e.codec.rate / 5
	if len(e.heard) < n {
		e.mu.Unlock()
		return 0
	}
	win := append([]int16(nil), e.heard[len(e.heard)-n:]...)
	e.mu.Unlock()
	return goertzelShare(win, float64(e.codec.rate), hz)
}

func goertzelShare(x []int16, rate, hz float64) float64 {
	coeff := 2 * math.Cos(2*math.Pi*hz/rate)
	var s1, s2, energy float64
	for _, v := range x {
		f := float64(v)
		s := f + coeff*s1 - s2
		s2, s1 = s1, s
		energy += f * f
	}
	if energy == 0 {
		return 0
	}
	power := s1*s1 + s2*s2 - coeff*s1*s2
	return 2 * power / (float64(len(x)) * energy)
}

// waitTone waits until the endpoint hears hz as the dominant frequency.
func (e *rtpEndpoint) waitTone(t *testing.T, who string, hz float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		share := e.toneShare(hz)
		if share > 0.6 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not hear %.0f Hz: share %.2f over %d packets", who, hz, share, e.received())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
