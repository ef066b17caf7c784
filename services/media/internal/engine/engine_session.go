package engine

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"callgrid.dev/services/media/internal/quality"
	"callgrid.dev/services/media/internal/sdpneg"
	"callgrid.dev/services/media/internal/udpio"
)

// session is one call's media: two legs (one for a service), the directions
// between them, the event loop that reads their sockets and the goroutine
// that keeps the session's time.
type session struct {
	e       *Engine
	id      string
	callID  string
	service Service
	log     zerolog.Logger
	started time.Time

	legs [2]*leg       // [0] A, [1] B (nil when a service answers A)
	dirs [2]*direction // dirs[i] carries what legs[i]'s endpoint sends

	// established is set once both ends are known (answer, or a service's
	// own answer); media timeouts only apply from then on, so a callee
	// ringing for a minute is not a dead call.
	established atomic.Bool
	// tone is what ServiceTone plays. The clock encodes with it holding
	// toneMu, and a negotiation replaces it holding toneMu too, so that
	// the one replaced is closed only once nothing can be encoding with it.
	tone   atomic.Pointer[toneSource]
	toneMu sync.Mutex
	// toneReleased, guarded by toneMu, is set once release closed the
	// tone: a negotiation that took the session up before it ended and
	// replaces the tone afterwards closes its own at once.
	toneReleased bool

	mu          sync.Mutex // serialises negotiation
	offer       []byte     // the offer SDP, to recognise a retried request
	offerReply  []byte
	answer      []byte
	answerReply []byte
	transcoding bool
	closers     []func() // codec state, released after the goroutines end
	transcoders map[transcoderKey]*transcoder
	// The in-dialog offer each leg made that awaits its answer, with what
	// it changed, for a rollback if it is rejected (both may be pending at
	// once: glare).
	pending [2]*pendingOffer

	loop     int // index of the event loop that reads every socket of the session
	done     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

func (e *Engine) newSession(p OfferParams) *session {
	return &session{
		e:       e,
		id:      p.SessionID,
		callID:  p.CallID,
		service: p.Service,
		started: time.Now(),
		loop:    e.loops.Pick(),
		log: e.log.With().
			Str("session_id", p.SessionID).
			Str("call_id", p.CallID).
			Stringer("service", p.Service).
			Logger(),
		done: make(chan struct{}),
	}
}

// start hands the session's sockets to one event loop, so everything a
// reader owns (latching, directions, transcoders) is only ever touched by
// one goroutine, and starts the session's clock. After an error the caller
// stops the session, which takes out whatever was added.
func (s *session) start() error {
	loop := s.e.loops.At(s.loop)
	for _, l := range s.legs {
		if l == nil {
			continue
		}
		d := s.dirs[l.side.index()]
		d.s = s
		if err := loop.Add(l.pair.RTP, d); err != nil {
			return fmt.Errorf("read rtp socket: %w", err)
		}
		if err := loop.Add(l.pair.RTCP, rtcpPort{s: s, l: l}); err != nil {
			return fmt.Errorf("read rtcp socket: %w", err)
		}
	}
	s.wg.Add(1)
	go s.clock()
	return nil
}

// stop takes the sockets out of the loop and ends the clock, then frees
// codecs and ports: the ports go back to the pool only once no handler can
// touch them.
func (s *session) stop() {
	s.stopOnce.Do(func() {
		close(s.done)
		s.e.loops.At(s.loop).Remove(s.sockets()...)
		s.wg.Wait()
		s.release()
	})
}

func (s *session) sockets() []*udpio.Socket {
	var socks []*udpio.Socket
	for _, l := range s.legs {
		if l != nil {
			socks = append(socks, l.pair.RTP, l.pair.RTCP)
		}
	}
	return socks
}

// release frees what negotiation built. Used directly for a session that
// failed before its goroutines started.
func (s *session) release() {
	s.mu.Lock()
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()
	for _, c := range closers {
		c()
	}
	// Taken out under toneMu, so that a late replaceTone neither closes
	// it a second time nor leaves its own tone open.
	s.toneMu.Lock()
	t := s.tone.Swap(nil)
	s.toneReleased = true
	s.toneMu.Unlock()
	if t != nil {
		t.close()
	}
	for _, l := range s.legs {
		if l != nil {
			l.pair.Release()
		}
	}
}

// replaceTone makes t the tone played and closes the one it replaces: the
// clock takes t up at its next tick, and cannot be encoding with the old
// one once toneMu is had. Once the session released its tone, t is
// closed instead: nothing will play it.
func (s *session) replaceTone(t *toneSource) {
	s.toneMu.Lock()
	if s.toneReleased {
		s.toneMu.Unlock()
		t.close()
		return
	}
	old := s.tone.Swap(t)
	s.toneMu.Unlock()
	if old != nil {
		old.close()
	}
}

// rtcpPort handles what arrives on a leg's RTCP socket.
type rtcpPort struct {
	s *session
	l *leg
}

func (p rtcpPort) HandleDatagram(pkt []byte, src netip.AddrPort, now time.Time) {
	if len(pkt) > maxPacket {
		p.l.drop(dropMalformed)
		return
	}
	p.s.handleRTCP(p.l, pkt, src, false, now)
}

// expired reports whether the session's media stopped, and the leg that
// went silent. A leg whose stream is sendrecv as negotiated (what it
// declared within what the node told it) must not be silent for longer than
// MediaTimeout. A leg on hold or one-way is not timed out for its own
// silence, which may be what it was told: a session with such a leg is,
// once no leg at all has sent anything for HoldTimeout (0: never), as a
// call on hold whose music stopped or an announcement that ended.
func (s *session) expired(now time.Duration, cfg Config) (Leg, bool) {
	if !s.established.Load() {
		return LegUnknown, false
	}
	var (
		newest   time.Duration
		quietest = LegUnknown
		oldest   time.Duration
		held     bool
	)
	for _, l := range s.legs {
		if l == nil {
			continue
		}
		p := l.peer.Load()
		if p == nil {
			continue
		}
		rx := time.Duration(l.lastRx.Load())
		newest = max(newest, rx)
		if quietest == LegUnknown || rx < oldest {
			quietest, oldest = l.side, rx
		}
		if l.direction(p) != sdpneg.SendRecv {
			held = true
			continue
		}
		if cfg.MediaTimeout > 0 && now-rx > cfg.MediaTimeout {
			return l.side, true
		}
	}
	if held && cfg.HoldTimeout > 0 && now-newest > cfg.HoldTimeout {
		return quietest, true
	}
	return LegUnknown, false
}

// quality reports both legs. Call after stop for final figures.
func (s *session) quality() Quality {
	s.mu.Lock()
	defer s.mu.Unlock()
	var q Quality
	for i, l := range s.legs {
		if l != nil {
			q.Legs[i] = l.quality()
		}
	}
	return q
}

func (l *leg) quality() LegQuality {
	q := LegQuality{
		Codec:      string(l.info.Name),
		PacketsIn:  l.packetsIn.Load(),
		PacketsOut: l.packetsOut.Load(),
		BytesIn:    l.bytesIn.Load(),
		BytesOut:   l.bytesOut.Load(),
		Dropped: Drops{
			WrongSource:        l.drops[dropWrongSource].Load(),
			Malformed:          l.drops[dropMalformed].Load(),
			UnknownPayloadType: l.drops[dropUnknownPayloadType].Load(),
			NoDestination:      l.drops[dropNoDestination].Load(),
			CodecError:         l.drops[dropCodecError].Load(),
			TooLate:            l.drops[dropTooLate].Load(),
		},
	}
	if rx := l.rx.Load(); rx != nil {
		t := l.rxRetired.plus(rx.Current())
		q.Lost = int64(t.lost)
		q.Expected = t.expected
		q.Duplicates = int64(t.duplicates)
		q.Reordered = int64(t.reordered)
		q.JitterMs = t.jitterMs
		if t.valid && t.packets > 0 {
			// One-way delay is not measured on a relay; the estimate
			// rates what the network did to the stream we received.
			q.MOS = quality.MOS(q.Codec, 100*quality.LossRatio(t.lost, t.expected), 0, t.jitterMs)
		}
	}
	return q
}

// receiveTotals adds up the statistics of the receivers a leg has had: one
// per codec clock, as an endpoint switching codecs changes the clock its
// jitter is measured at, while its loss is the call's throughout. Each
// receiver's share is its call totals, not its current source's: the
// loss before an SSRC change or a restart of the sequence is the call's
// too.
type receiveTotals struct {
	packets, expected, lost, duplicates, reordered uint64
	jitterMs                                       float64 // of the latest receiver with a source past probation
	valid                                          bool    // one had
}

// plus returns the totals with st added; t may be nil (no receiver yet).
func (t *receiveTotals) plus(st quality.Stats) *receiveTotals {
	var sum receiveTotals
	if t != nil {
		sum = *t
	}
	sum.duplicates += st.Duplicates
	sum.reordered += st.Reordered
	switch {
	case st.CallExpected > 0:
		// Some source passed probation; the jitter estimate carries on
		// across sources, so it is this receiver's even while a new
		// source is on probation.
		sum.packets += st.CallPackets
		sum.expected += st.CallExpected
		sum.lost += st.CallLost
		sum.jitterMs, sum.valid = st.JitterMs, true
	case !sum.valid:
		sum.jitterMs = st.JitterMs
	}
	return &sum
}

// finish ends a session that has been taken out of the table, records its
// quality and returns it.
func (e *Engine) finish(s *session, reason string) Quality {
	s.stop()
	q := s.quality()
	for _, lq := range q.Legs {
		if lq.Codec == "" || lq.PacketsIn == 0 {
			continue
		}
		e.metrics.jitter.Observe(lq.JitterMs / 1000)
		// The share the MOS rates: packets counted in but never part of
		// a stream (a source's first packet on probation, strays, early
		// packets with no route yet) are no part of what was expected.
		if lq.Expected > 0 {
			e.metrics.loss.Observe(quality.LossRatio(uint64(lq.Lost), lq.Expected))
		}
		if lq.MOS > 0 {
			e.metrics.mos.Observe(lq.MOS)
		}
	}
	s.log.Info().
		Str("reason", reason).
		Dur("duration", time.Since(s.started)).
		Uint64("a_packets_in", q.Legs[0].PacketsIn).
		Uint64("b_packets_in", q.Legs[1].PacketsIn).
		Int64("a_lost", q.Legs[0].Lost).
		Int64("b_lost", q.Legs[1].Lost).
		Msg("media session ended")
	return q
}
