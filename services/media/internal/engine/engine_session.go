package engine

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"callgrid.dev/services/media/internal/quality"
	"callgrid.dev/services/media/internal/sdpneg"
)

// session is one call's media: two legs (one for a service), the directions
// between them and the goroutines that move packets.
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
	tone        atomic.Pointer[toneSource]

	mu          sync.Mutex // serialises negotiation
	offer       []byte     // the offer SDP, to recognise a retried request
	offerReply  []byte
	answer      []byte
	answerReply []byte
	transcoding bool
	closers     []func() // codec state, released after the goroutines end

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
		log: e.log.With().
			Str("session_id", p.SessionID).
			Str("call_id", p.CallID).
			Stringer("service", p.Service).
			Logger(),
		done: make(chan struct{}),
	}
}

// start launches the session's goroutines: a reader per socket and a clock.
func (s *session) start() {
	for _, l := range s.legs {
		if l == nil {
			continue
		}
		s.wg.Add(2)
		go s.readRTP(l)
		go s.readRTCP(l)
	}
	s.wg.Add(1)
	go s.clock()
}

// stop ends the goroutines, then frees codecs and ports. Sockets are
// closed first to unblock the readers; the ports go back to the pool only
// once no reader can touch them.
func (s *session) stop() {
	s.stopOnce.Do(func() {
		close(s.done)
		for _, l := range s.legs {
			if l != nil {
				l.pair.Close()
			}
		}
		s.wg.Wait()
		s.release()
	})
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
	for _, l := range s.legs {
		if l != nil {
			l.pair.Release()
		}
	}
}

func (s *session) stopping() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// readRTP is the leg's RTP socket reader. RTCP arriving here (rtcp-mux) is
// told apart by its packet type (RFC 5761 §4).
func (s *session) readRTP(l *leg) {
	defer s.wg.Done()
	d := s.dirs[l.side.index()]
	buf := make([]byte, maxPacket)
	for {
		n, src, err := l.pair.RTP.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.stopping() {
				return
			}
			continue
		}
		now := time.Now()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		pkt := buf[:n]
		if looksLikeRTCP(pkt) {
			s.handleRTCP(l, pkt, src, true, now)
			continue
		}
		d.handleRTP(pkt, src, now, now.Sub(s.e.epoch))
	}
}

// readRTCP is the leg's RTCP socket reader.
func (s *session) readRTCP(l *leg) {
	defer s.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, src, err := l.pair.RTCP.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.stopping() {
				return
			}
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		s.handleRTCP(l, buf[:n], src, false, time.Now())
	}
}

// expired reports whether a leg has been silent for longer than its
// timeout allows.
func (s *session) expired(now time.Duration, cfg Config) (Leg, bool) {
	if !s.established.Load() {
		return LegUnknown, false
	}
	for _, l := range s.legs {
		if l == nil {
			continue
		}
		p := l.peer.Load()
		if p == nil {
			continue
		}
		limit := cfg.MediaTimeout
		if p.direction != sdpneg.SendRecv {
			limit = cfg.HoldTimeout
		}
		if limit > 0 && now-time.Duration(l.lastRx.Load()) > limit {
			return l.side, true
		}
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
		},
	}
	if rx := l.rx.Load(); rx != nil {
		st := rx.Current()
		q.Lost = int64(st.Lost)
		q.Duplicates = int64(st.Duplicates)
		q.Reordered = int64(st.Reordered)
		q.JitterMs = st.JitterMs
		if st.Valid && st.Packets > 0 {
			// One-way delay is not measured on a relay; the estimate
			// rates what the network did to the stream we received.
			q.MOS = quality.MOS(q.Codec, st.LossPercent(), 0, st.JitterMs)
		}
	}
	return q
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
		if expected := float64(lq.PacketsIn) + float64(lq.Lost); expected > 0 {
			e.metrics.loss.Observe(float64(lq.Lost) / expected)
		}
		if lq.MOS > 0 {
			e.metrics.mos.Observe(lq.MOS)
		}
	}
	e.metrics.sessionsActive.Dec()
	s.mu.Lock()
	if s.transcoding {
		s.transcoding = false
		e.metrics.sessionsTranscoding.Dec()
	}
	s.mu.Unlock()
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
