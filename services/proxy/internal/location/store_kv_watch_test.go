package location

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deleteBucket deletes the location bucket as an operator would, through
// a connection of its own.
func deleteBucket(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, DefaultKVBucket); err != nil {
		t.Fatal(err)
	}
}

func bobAt(contact string, seq uint32) Binding {
	now := time.Now()
	return Binding{AOR: "bob@localhost", Contact: contact, CallID: "c", CSeq: seq, Expires: now.Add(time.Hour), UpdatedAt: now}
}

// TestKVReplicaResyncsAfterBucketReplaced: once the bucket is deleted and
// created again, its revisions start over. The replica must then follow the
// new bucket: route to a phone registered there through another replica,
// not to one only the old bucket had, and read its own writes again.
func TestKVReplicaResyncsAfterBucketReplaced(t *testing.T) {
	url := startNATS(t).ClientURL()
	a := newKVStore(t, url)
	waitUntil(t, "replica in sync", a.Synced)
	ctx := context.Background()
	// Enough writes that bob's revision in the old bucket stays above
	// those the new one reaches here.
	for i := range 10 {
		save(t, a, bobAt("sip:bob@10.0.0.1", uint32(i+1)))
	}
	now := time.Now()
	save(t, a, Binding{AOR: "carol@localhost", Contact: "sip:carol@10.0.0.3", Expires: now.Add(time.Hour), UpdatedAt: now})

	deleteBucket(t, url)
	// Another replica starting creates the bucket again and bob registers
	// through it.
	b := openKVStore(t, url)
	save(t, b, bobAt("sip:bob@10.0.0.2", 1))

	waitUntil(t, "replica a following the new bucket", func() bool {
		bob, err := a.Lookup(ctx, "bob@localhost")
		if err != nil {
			t.Fatal(err)
		}
		carol, err := a.Lookup(ctx, "carol@localhost")
		if err != nil {
			t.Fatal(err)
		}
		return equalContacts(bob, []string{"sip:bob@10.0.0.2"}) && len(carol) == 0
	})
	later := bobAt("sip:bob@10.0.0.3", 1)
	later.UpdatedAt = later.UpdatedAt.Add(time.Second)
	save(t, a, later)
	got, err := a.Lookup(ctx, "bob@localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !equalContacts(got, []string{"sip:bob@10.0.0.3", "sip:bob@10.0.0.2"}) {
		t.Fatalf("replica a after its own write: %+v", got)
	}
}

// TestKVStoreRecreatesMissingBucket: a bucket gone from the server (deleted,
// or lost with a server's store) comes back without a proxy restarting, and
// registrations work again.
func TestKVStoreRecreatesMissingBucket(t *testing.T) {
	url := startNATS(t).ClientURL()
	a := newKVStore(t, url)
	waitUntil(t, "replica in sync", a.Synced)
	ctx := context.Background()
	save(t, a, bobAt("sip:bob@10.0.0.1", 1))

	deleteBucket(t, url)
	fresh := bobAt("sip:bob@10.0.0.2", 1)
	waitUntil(t, "a registration stored again", func() bool {
		_, err := a.Update(ctx, fresh.AOR, func([]Binding) ([]Binding, error) { return []Binding{fresh}, nil })
		return err == nil
	})
	// What the bucket holds now is what the replica routes by.
	waitUntil(t, "replica in step with the new bucket", func() bool {
		got, err := a.Lookup(ctx, fresh.AOR)
		return err == nil && equalContacts(got, []string{fresh.Contact})
	})
	entry, err := a.kv.Get(ctx, recordKey(fresh.AOR))
	if err != nil {
		t.Fatalf("record not in the new bucket: %v", err)
	}
	r, err := decodeRecord(entry.Value())
	if err != nil || len(r.Bindings) != 1 || r.Bindings[0].Contact != fresh.Contact {
		t.Fatalf("new bucket holds %+v, %v", r, err)
	}
}
