package sipproxy

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"callgrid.dev/services/proxy/internal/location"
)

func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv.ClientURL()
}

func kvLocation(t *testing.T, url string) *location.KVStore {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, err := location.NewKVStore(ctx, js, location.KVConfig{}, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// TestReplicasShareRegistrations runs two proxies on one NATS: a phone
// registered through A is called through B, and the BYE sent to A (with B's
// Route) ends the call, proving no replica needs the other's memory.
func TestReplicasShareRegistrations(t *testing.T) {
	url := startNATS(t)
	portA, portB := freeUDPPort(t), freeUDPPort(t)
	aliases := []string{"127.0.0.1:" + strconv.Itoa(portA), "127.0.0.1:" + strconv.Itoa(portB)}
	replica := func(port int) *runningProxy {
		cfg := trustedConfig()
		cfg.ListenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cfg.Transports = []string{"udp"}
		cfg.Aliases = aliases
		cfg.Auth.NonceSecret = "shared-between-replicas"
		return startProxy(t, cfg, WithLocationStore(kvLocation(t, url)))
	}
	a, b := replica(portA), replica(portB)

	bob := newCallee(t, 10*time.Millisecond)
	if res := bob.register(t, a.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register via a: %d", res.StatusCode)
	}
	waitFor(t, "registration visible on b", func() bool { return b.loc.Count() == 1 })

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	res := caller.do(t, b.Addr("udp"), invite)
	if res.StatusCode != 200 {
		t.Fatalf("invite via b: %d", res.StatusCode)
	}
	receive(t, "invite at bob", bob.invites)
	if rr := res.RecordRoute(); rr == nil || rr.Address.Port != portB {
		t.Fatalf("record-route %v, want replica b", res.RecordRoute())
	}
	ack := inDialog(sip.ACK, invite, res, invite.CSeq().SeqNo)
	ack.SetDestination(b.Addr("udp"))
	if err := caller.cli.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
	receive(t, "ack at bob", bob.acks)

	// BYE goes to replica A although the route set names B.
	bye := inDialog(sip.BYE, invite, res, invite.CSeq().SeqNo+1)
	if res := caller.do(t, a.Addr("udp"), bye); res.StatusCode != 200 {
		t.Fatalf("bye via a: %d", res.StatusCode)
	}
	receive(t, "bye at bob", bob.byes)
}
