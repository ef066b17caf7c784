package sipproxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// probeLoop sends OPTIONS to every gateway each interval and flips its state
// after DownAfter consecutive failures or UpAfter consecutive successes.
func (s *Server) probeLoop(ctx context.Context) {
	if s.cfg.Probe.Disabled || len(s.groups) == 0 {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(s.cfg.Probe.Interval)
	defer t.Stop()
	for {
		for _, g := range s.groups {
			for _, gw := range g.gateways {
				if !gw.probing.CompareAndSwap(false, true) {
					continue // the previous probe of this gateway is still out
				}
				wg.Go(func() {
					defer gw.probing.Store(false)
					gen := gw.gen.Load()
					s.recordProbe(gw, gen, s.probe(ctx, gw))
				})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe sends one OPTIONS; any final answer except 408 and 5xx/6xx means alive.
func (s *Server) probe(ctx context.Context, gw *gatewayState) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Probe.Timeout)
	defer cancel()
	req := s.probeRequest(gw)
	tx, err := s.txl.Request(ctx, req)
	if err != nil {
		return fmt.Errorf("send options to %s: %w", gw.cfg.Name, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if res.StatusCode == sip.StatusRequestTimeout || res.StatusCode >= 500 {
				return fmt.Errorf("gateway %s answered %d", gw.cfg.Name, res.StatusCode)
			}
			return nil
		case <-tx.Done():
			return fmt.Errorf("options to %s: %w", gw.cfg.Name, tx.Err())
		case <-ctx.Done():
			return fmt.Errorf("options to %s: %w", gw.cfg.Name, ctx.Err())
		}
	}
}

func (s *Server) probeRequest(gw *gatewayState) *sip.Request {
	t := gw.target("")
	req := sip.NewRequest(sip.OPTIONS, t.uri)
	req.AppendHeader(s.ourVia(t.transport, sip.GenerateBranchN(16)))
	mf := sip.MaxForwardsHeader(defaultMaxForwardsAdded)
	req.AppendHeader(&mf)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "ping", Host: s.cfg.AdvertiseHost}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: t.uri, Params: sip.NewParams()})
	callID := sip.CallIDHeader("probe-" + sip.GenerateTagN(16))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.AppendHeader(sip.NewHeader("User-Agent", s.cfg.UserAgent))
	req.SetBody(nil)
	s.address(req, t)
	return req
}

// recordProbe counts a probe's result. gen is the gateway's state
// generation when the probe was sent: one that predates a failed call
// taking the gateway out says nothing of it since.
func (s *Server) recordProbe(gw *gatewayState, gen uint64, err error) {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if gw.gen.Load() != gen {
		return
	}
	if err != nil {
		gw.successes = 0
		gw.fails++
		if gw.up.Load() && gw.fails >= s.cfg.Probe.DownAfter {
			s.setDownLocked(gw, reasonProbe)
			s.log.Warn().Err(err).Str("group", gw.group).Str("gateway", gw.cfg.Name).Str("reason", reasonProbe).Msg("gateway down")
		}
		return
	}
	gw.fails = 0
	if time.Now().Before(gw.heldUntil) {
		// It said 503 with Retry-After: answering OPTIONS meanwhile does
		// not make it take calls.
		return
	}
	gw.successes++
	if !gw.up.Load() && gw.successes >= s.cfg.Probe.UpAfter {
		s.setUpLocked(gw)
		s.logGatewayUp(gw, reasonProbe)
	}
}
