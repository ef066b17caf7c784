package sipproxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

const (
	// mediaTimeoutConsumer is the durable consumer all replicas share:
	// each media timeout is handed to one replica, and one that comes while
	// no replica runs waits in the events stream for the next to start.
	mediaTimeoutConsumer = "callgrid-proxy-media-timeout"
	// mediaTimeoutAckWait is how long a replica has to hang a call up
	// before the timeout goes to another one.
	mediaTimeoutAckWait = 30 * time.Second
	// mediaTimeoutDeliveries bounds the replicas a timeout is tried on.
	mediaTimeoutDeliveries = 5
	// mediaTimeoutRetry is how long a timeout no BYE of which could be
	// sent waits before it is tried again.
	mediaTimeoutRetry = 5 * time.Second
	// fetchedTimeouts is how many timeouts a replica holds at once: few,
	// so that a burst (a node's calls timing out together) spreads over
	// the replicas.
	fetchedTimeouts = 16
	// consumerRetry paces the recreation of a consumer the bus lost.
	consumerRetry = time.Second
)

// mediaTimeouts hangs up calls whose session a node ended for lack of RTP.
type mediaTimeouts struct {
	s        *Server
	consumer jetstream.Consumer
}

// openMediaTimeouts creates (or finds) the replicas' durable consumer of
// media timeouts. It runs at start, so that a proxy without it fails then.
func (s *Server) openMediaTimeouts(ctx context.Context) (*mediaTimeouts, error) {
	c, err := s.mediaTimeoutConsumer(ctx)
	if err != nil {
		return nil, err
	}
	return &mediaTimeouts{s: s, consumer: c}, nil
}

func (s *Server) mediaTimeoutConsumer(ctx context.Context) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := s.bus.JetStream().CreateOrUpdateConsumer(ctx, bus.EventsStream, jetstream.ConsumerConfig{
		Durable:       mediaTimeoutConsumer,
		Description:   "media timeouts, each hung up by one proxy replica",
		FilterSubject: bus.SubjectMediaTimeout,
		// Only timeouts from the consumer's creation on: an older backlog
		// of a new deployment is not this fleet's to hang up.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       mediaTimeoutAckWait,
		MaxDeliver:    mediaTimeoutDeliveries,
	})
	if err != nil {
		return nil, fmt.Errorf("media timeout consumer: %w", err)
	}
	return c, nil
}

// run consumes until ctx ends. A consumer the bus lost (a bus restarted
// without its store) is created again.
func (m *mediaTimeouts) run(ctx context.Context) {
	for {
		err := m.consume(ctx)
		if ctx.Err() != nil {
			return
		}
		m.s.log.Warn().Err(err).Msg("media timeout consumer lost, creating it again")
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(consumerRetry):
			}
			c, err := m.s.mediaTimeoutConsumer(ctx)
			if err == nil {
				m.consumer = c
				break
			}
			m.s.log.Debug().Err(err).Msg("recreate media timeout consumer")
		}
	}
}

// consume delivers timeouts to handle until ctx ends (nil) or the consumer
// is gone (its error).
func (m *mediaTimeouts) consume(ctx context.Context) error {
	lost := make(chan error, 1)
	cc, err := m.consumer.Consume(m.handle, jetstream.PullMaxMessages(fetchedTimeouts), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			select {
			case lost <- err:
			default:
			}
			return
		}
		m.s.log.Debug().Err(err).Msg("media timeout consumer")
	}))
	if err != nil {
		return fmt.Errorf("consume media timeouts: %w", err)
	}
	select {
	case <-ctx.Done():
		err = nil
	case err = <-lost:
	}
	// Closed waits for the handler running, so that no hang-up starts
	// once the proxy closes its transports. What was fetched and not
	// handled goes to another replica once its ack wait passes.
	closed := cc.Closed() // taken before Stop, which may close it early
	cc.Stop()
	<-closed
	return err
}

func (m *mediaTimeouts) handle(msg jetstream.Msg) {
	ev := new(callgridv1.MediaTimeout)
	if err := proto.Unmarshal(msg.Data(), ev); err != nil {
		m.s.m.dropped.WithLabelValues("bad_media_timeout").Inc()
		_ = msg.Term()
		return
	}
	log := m.s.log.With().Str("call_id", ev.GetCallId()).Str("node_id", ev.GetNodeId()).Str("session_id", ev.GetSessionId()).Logger()
	if meta, err := msg.Metadata(); err == nil && meta.NumDelivered > 1 {
		log = log.With().Uint64("delivery", meta.NumDelivered).Logger()
	}
	log.Info().Msg("media timed out, hanging up both legs")
	if !m.s.hangUpDialog(log, ev.GetDialog(), "media_timeout") {
		// Not one BYE left this replica: let another one try.
		if err := msg.NakWithDelay(mediaTimeoutRetry); err != nil {
			log.Debug().Err(err).Msg("nak media timeout")
		}
		return
	}
	if err := msg.Ack(); err != nil {
		log.Debug().Err(err).Msg("ack media timeout")
	}
}
