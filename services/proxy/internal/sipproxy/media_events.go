package sipproxy

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

const (
	// eventQueueSize bounds the events waiting for the bus. A full queue
	// drops (and counts) rather than slow a call down: events feed CDRs and
	// dashboards, never call handling.
	eventQueueSize = 4096
	// eventPublishTimeout bounds one publish and its stream acknowledgement.
	eventPublishTimeout = 2 * time.Second
)

// pendingEvent is an event on its way to the events stream.
type pendingEvent struct {
	kind    string
	subject string
	msg     proto.Message
}

// publish queues an event without blocking the request path.
func (s *Server) publish(kind, subject string, msg proto.Message) {
	if s.events == nil {
		return
	}
	select {
	case s.events <- pendingEvent{kind: kind, subject: subject, msg: msg}:
	default:
		s.m.eventsDropped.WithLabelValues(kind).Inc()
	}
}

// publishEvents sends queued events until ctx ends. The bus client counts
// each publish by kind and result.
func (s *Server) publishEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-s.events:
			pctx, cancel := context.WithTimeout(ctx, eventPublishTimeout)
			if err := s.bus.PublishEvent(pctx, ev.kind, ev.subject, ev.msg); err != nil {
				s.log.Debug().Err(err).Str("kind", ev.kind).Msg("publish event")
			}
			cancel()
		}
	}
}

func (s *Server) publishCallStarted(sess mediaSession, d *callgridv1.Dialog) {
	s.publish("call_started", bus.SubjectCallStarted, &callgridv1.CallStarted{
		CallId: d.GetCallId(), SessionId: sess.session, NodeId: sess.node,
		Caller: d.GetCallerUri(), Callee: d.GetCalleeUri(), UnixMs: time.Now().UnixMilli(),
	})
}

func (s *Server) publishCallAnswered(sess mediaSession, callID string, transcoding bool) {
	s.publish("call_answered", bus.SubjectCallAnswered, &callgridv1.CallAnswered{
		CallId: callID, SessionId: sess.session, NodeId: sess.node,
		Transcoding: transcoding, UnixMs: time.Now().UnixMilli(),
	})
}
