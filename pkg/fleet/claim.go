package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// Defaults for ClaimConfig fields left zero.
const (
	DefaultAttemptTimeout = 300 * time.Millisecond
	DefaultMaxAttempts    = 4
	// releaseTimeout bounds the delete sent to a node whose offer reply
	// never came, so a reservation made there is not stranded.
	releaseTimeout = time.Second
	// A release without a reply is tried again, waiting releaseRetryMin
	// doubling to releaseRetryMax, for releaseRetryFor in all.
	releaseRetryMin = 250 * time.Millisecond
	releaseRetryMax = 4 * time.Second
	releaseRetryFor = 30 * time.Second
)

// CauseOfferTimeout is the cause of the release a claimer sends a node
// whose offer reply never came. Such a session never carried the call its
// id names (the claim may have gone on to another node with the same id),
// so the node publishes no end for it. Should the release be lost, the
// node's setup timeout ends the session, with no end published either: no
// answer ever reached it.
const CauseOfferTimeout = "offer_timeout"

// ErrNoMediaCapacity: no node in the fleet could take the session.
var ErrNoMediaCapacity = errors.New("no media capacity")

// ClaimConfig tunes how sessions are claimed.
type ClaimConfig struct {
	// AttemptTimeout bounds one offer to one node before the next is tried.
	AttemptTimeout time.Duration `yaml:"attempt_timeout"`
	// MaxAttempts bounds how many nodes one claim tries.
	MaxAttempts int `yaml:"max_attempts"`
	// Units a new session is expected to cost (a node's passthrough cost).
	Units int `yaml:"units"`
}

func (c ClaimConfig) withDefaults() ClaimConfig {
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Units <= 0 {
		c.Units = 1
	}
	return c
}

// Claimer obtains media sessions from the fleet for one proxy process and
// addresses follow-up requests to the node that holds a session.
type Claimer struct {
	bus  *bus.Client
	view *View
	cfg  ClaimConfig
	log  zerolog.Logger

	rngMu sync.Mutex
	rng   *mrand.Rand

	claims *prometheus.CounterVec // result
	tries  prometheus.Histogram

	// releases are the releaseLater goroutines; closing stops them.
	releases sync.WaitGroup
	closing  chan struct{}
	closed   sync.Once
}

// NewClaimer returns a claimer choosing nodes from view.
func NewClaimer(c *bus.Client, view *View, cfg ClaimConfig, log zerolog.Logger, reg prometheus.Registerer) *Claimer {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	cl := &Claimer{
		bus: c, view: view, cfg: cfg.withDefaults(),
		log:     log.With().Str("component", "claimer").Logger(),
		rng:     mrand.New(mrand.NewChaCha8(seed)),
		closing: make(chan struct{}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_media_claims_total",
			Help: "Media session claims by result (ok, no_capacity, unavailable, rejected).",
		}, []string{"result"}),
		tries: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "callgrid_media_claim_attempts",
			Help:    "Nodes tried per claim.",
			Buckets: []float64{1, 2, 3, 4, 6, 8},
		}),
	}
	reg.MustRegister(cl.claims, cl.tries)
	for _, result := range []string{"ok", "no_capacity", "unavailable", "rejected"} {
		cl.claims.WithLabelValues(result)
	}
	return cl
}

// Close stops the releases still being retried and waits for them to
// return; the claimer takes no more claims after it. Call it before the
// bus client closes: a release retried on a closed client only waits out
// its retries. A session whose release stops here is ended by its node's
// setup timeout.
func (c *Claimer) Close() {
	c.closed.Do(func() { close(c.closing) })
	c.releases.Wait()
}

// NewSessionID returns a random session id that is also a valid subject
// token.
func NewSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Offer claims a session: it tries nodes in Candidates order, moving on when
// a node is full, draining, gone or slow, and returns the first OK reply
// (its NodeId names the node). It fails with ErrNoMediaCapacity when no node
// could take the session, bus.ErrUnavailable at once when the bus is away,
// and a *bus.StatusError when a node rejected the request itself (bad SDP,
// unsupported codec): another node would say the same.
func (c *Claimer) Offer(ctx context.Context, req *callgridv1.OfferRequest) (*callgridv1.OfferReply, error) {
	if !c.bus.Connected() {
		c.claims.WithLabelValues("unavailable").Inc()
		return nil, fmt.Errorf("claim media session: %w", bus.ErrUnavailable)
	}
	if req.GetSessionId() == "" {
		req.SessionId = NewSessionID()
	}
	c.rngMu.Lock()
	order := c.view.Candidates(c.cfg.Units, c.rng)
	c.rngMu.Unlock()
	if len(order) > c.cfg.MaxAttempts {
		order = order[:c.cfg.MaxAttempts]
	}
	var (
		lastErr error
		tried   int
	)
	for _, nodeID := range order {
		tried++
		reply, err := c.offerOne(ctx, nodeID, req)
		if err == nil {
			c.view.noteClaimed(nodeID, c.cfg.Units)
			c.claims.WithLabelValues("ok").Inc()
			c.tries.Observe(float64(tried))
			return reply, nil
		}
		lastErr = err
		var se *bus.StatusError
		if errors.As(err, &se) && !retryable(se.Status) {
			c.claims.WithLabelValues("rejected").Inc()
			c.tries.Observe(float64(tried))
			return nil, err
		}
		if errors.Is(err, bus.ErrUnavailable) || ctx.Err() != nil {
			break
		}
	}
	c.tries.Observe(float64(tried))
	if errors.Is(lastErr, bus.ErrUnavailable) {
		c.claims.WithLabelValues("unavailable").Inc()
		return nil, fmt.Errorf("claim media session: %w", lastErr)
	}
	c.claims.WithLabelValues("no_capacity").Inc()
	if lastErr == nil {
		return nil, fmt.Errorf("claim media session: %w: no eligible node among %d", ErrNoMediaCapacity, len(c.view.Nodes()))
	}
	return nil, fmt.Errorf("claim media session: %w: tried %d nodes, last: %w", ErrNoMediaCapacity, tried, lastErr)
}

func retryable(s callgridv1.Status) bool {
	return s == callgridv1.Status_STATUS_FULL || s == callgridv1.Status_STATUS_DRAINING || s == callgridv1.Status_STATUS_INTERNAL
}

func (c *Claimer) offerOne(ctx context.Context, nodeID string, req *callgridv1.OfferRequest) (*callgridv1.OfferReply, error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	reply := new(callgridv1.OfferReply)
	err := c.bus.Request(actx, "offer", bus.MediaSubject(nodeID, bus.OpOffer), req, reply)
	if err != nil {
		// No reply, whatever the reason (timeout, the caller gave up, the
		// bus dropped): the node may have reserved before the reply was
		// lost, so the session id is released there and the units come
		// back. A node that never saw the offer answers UNKNOWN_SESSION.
		// With no responders nobody received it (a node that died and is
		// still in the view), and there is nothing to release.
		if !errors.Is(err, bus.ErrNoResponders) {
			c.releaseLater(nodeID, req.GetSessionId())
		}
		return nil, err
	}
	if reply.GetStatus() != callgridv1.Status_STATUS_OK {
		if reply.GetStatus() == callgridv1.Status_STATUS_FULL || reply.GetStatus() == callgridv1.Status_STATUS_DRAINING {
			c.view.noteRefused(nodeID)
		}
		return nil, &bus.StatusError{Op: "offer", NodeID: nodeID, Status: reply.GetStatus(), Detail: reply.GetDetail()}
	}
	reply.NodeId = nodeID
	return reply, nil
}

// releaseLater deletes a session whose offer got no reply, trying again
// while no reply comes (the bus may be away) for up to releaseRetryFor;
// any reply, UNKNOWN_SESSION included, settles it. Past that, or once
// the claimer is closed, the node's own setup timeout ends the session.
func (c *Claimer) releaseLater(nodeID, sessionID string) {
	select {
	case <-c.closing:
		return
	default:
	}
	c.releases.Go(func() {
		wait := releaseRetryMin
		for deadline := time.Now().Add(releaseRetryFor); ; {
			ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
			_, err := c.Delete(ctx, nodeID, &callgridv1.DeleteRequest{SessionId: sessionID, Cause: CauseOfferTimeout})
			cancel()
			var status *bus.StatusError
			if err == nil || errors.As(err, &status) || time.Now().Add(wait).After(deadline) {
				return
			}
			select {
			case <-c.closing:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, releaseRetryMax)
		}
	})
}

// Answer sends leg B's answer to the node holding the session.
func (c *Claimer) Answer(ctx context.Context, nodeID string, req *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error) {
	reply := new(callgridv1.AnswerReply)
	if err := c.bus.Request(ctx, "answer", bus.MediaSubject(nodeID, bus.OpAnswer), req, reply); err != nil {
		return nil, err
	}
	return reply, statusErr("answer", nodeID, reply.GetStatus(), reply.GetDetail())
}

// Update changes a live session on the node holding it.
func (c *Claimer) Update(ctx context.Context, nodeID string, req *callgridv1.UpdateRequest) (*callgridv1.UpdateReply, error) {
	reply := new(callgridv1.UpdateReply)
	if err := c.bus.Request(ctx, "update", bus.MediaSubject(nodeID, bus.OpUpdate), req, reply); err != nil {
		return nil, err
	}
	return reply, statusErr("update", nodeID, reply.GetStatus(), reply.GetDetail())
}

// Delete ends a session on the node holding it.
func (c *Claimer) Delete(ctx context.Context, nodeID string, req *callgridv1.DeleteRequest) (*callgridv1.DeleteReply, error) {
	reply := new(callgridv1.DeleteReply)
	if err := c.bus.Request(ctx, "delete", bus.MediaSubject(nodeID, bus.OpDelete), req, reply); err != nil {
		return nil, err
	}
	return reply, statusErr("delete", nodeID, reply.GetStatus(), reply.GetDetail())
}

func statusErr(op, nodeID string, s callgridv1.Status, detail string) error {
	if s == callgridv1.Status_STATUS_OK {
		return nil
	}
	return &bus.StatusError{Op: op, NodeID: nodeID, Status: s, Detail: detail}
}
