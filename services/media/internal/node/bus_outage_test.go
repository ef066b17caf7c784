package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// What a node writes while its bus is away waits for it: a media timeout
// raised during an outage reaches the events stream once the bus is back
// (a proxy then hangs the call up), and the ended call's record goes.
func TestWritesDuringABusOutageWaitForTheBus(t *testing.T) {
	tb := startBus(t)
	n := startNode(t, tb, "n", 10)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return p.view.Has("n") })
	session, calls := answeredCall(t, p, "n", &callgridv1.Dialog{CallId: "call-1", CallerTag: "a", CalleeTag: "b"})
	key := fleet.CallKey("n", session)

	tb.srv.Shutdown()
	eventually(t, 3*time.Second, "node sees the bus away", func() bool { return !n.client.Connected() })
	n.HandleMediaTimeout(session, &callgridv1.MediaQuality{})
	time.Sleep(200 * time.Millisecond)
	tb.restart(t)
	eventually(t, 5*time.Second, "node reconnected", n.client.Connected)
	eventually(t, 5*time.Second, "proxy reconnected", p.client.Connected)

	stream, err := p.client.JetStream().Stream(context.Background(), bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the media timeout in the events stream", func() bool {
		_, err := stream.GetLastMsgForSubject(context.Background(), bus.SubjectMediaTimeout)
		return err == nil
	})
	eventually(t, 10*time.Second, "the ended call's record removed", func() bool {
		_, err := calls.Get(context.Background(), key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}
