package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// DefaultCallRecordMaxAge drops call records nobody removed (a node and
// every proxy gone at once); no call is expected to last longer.
const DefaultCallRecordMaxAge = 24 * time.Hour

// reaperKeyPrefix marks the key a proxy creates to take a dead node's calls:
// KV Create succeeds for one replica only. ReservedNodeID is therefore no
// node's id: its calls' keys would share the locks' names.
const (
	reaperKeyPrefix = ReservedNodeID + "."
	ReservedNodeID  = "reaper"
)

// staleReaperLock is the age past which a reaper lock is taken for one a
// replica left behind as it died: taking a node's calls lasts seconds.
const staleReaperLock = time.Minute

// OpenCallsBucket opens (creating if needed) the bucket of answered calls.
func OpenCallsBucket(ctx context.Context, c *bus.Client, replicas int) (jetstream.KeyValue, error) {
	if replicas <= 0 {
		replicas = c.Replicas()
	}
	kv, err := c.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bus.BucketCalls,
		Description: "answered calls per media node, to hang up the calls of a node that died",
		History:     1,
		TTL:         DefaultCallRecordMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open calls bucket: %w", err)
	}
	return kv, nil
}

// CallKey is the calls-bucket key of one session.
func CallKey(nodeID, sessionID string) string { return nodeID + "." + sessionID }

// NodeDownEnd is the end of the call rec recorded, ended at now because
// the node that carried it went down: what that node's next run or the
// proxy reaping it publishes on its behalf. Its duration is the talk time
// since the answer, never negative should a clock have stepped back.
func NodeDownEnd(rec *callgridv1.CallRecord, now time.Time) *callgridv1.CallEnded {
	var talked float64
	if at := rec.GetAnsweredUnixMs(); at > 0 {
		talked = max(float64(now.UnixMilli()-at)/1000, 0)
	}
	return &callgridv1.CallEnded{
		CallId: rec.GetCallId(), SessionId: rec.GetSessionId(), NodeId: rec.GetNodeId(),
		DurationSeconds: talked, Cause: "node_down", UnixMs: now.UnixMilli(),
	}
}

// ClaimOrphans takes the call records of a node that left the fleet. Exactly
// one caller among the proxy replicas gets them (the others get none); the
// records are removed from the bucket as they are taken, so the calls are
// hung up once.
func ClaimOrphans(ctx context.Context, kv jetstream.KeyValue, nodeID string) ([]*callgridv1.CallRecord, error) {
	lock := reaperKeyPrefix + nodeID
	if err := takeReaperLock(ctx, kv, lock); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, nil
		}
		return nil, fmt.Errorf("claim orphans of %s: %w", nodeID, err)
	}
	// Release the lock once done so a node that returns under the same id
	// and dies again can be reaped again.
	defer func() { _ = kv.Delete(context.WithoutCancel(ctx), lock) }()

	lister, err := kv.ListKeysFiltered(ctx, nodeID+".*")
	if err != nil {
		return nil, fmt.Errorf("list calls of %s: %w", nodeID, err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	var records []*callgridv1.CallRecord
	for _, key := range keys {
		if !strings.HasPrefix(key, nodeID+".") {
			continue
		}
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue // removed meanwhile: the call ended normally
		}
		rec := new(callgridv1.CallRecord)
		if err := proto.Unmarshal(entry.Value(), rec); err == nil {
			records = append(records, rec)
		}
		_ = kv.Delete(ctx, key)
	}
	return records, nil
}

// takeReaperLock creates lock, or takes it over when the replica that
// created it left it behind (it died before its deferred delete): a lock
// older than staleReaperLock. ErrKeyExists means another replica holds it.
func takeReaperLock(ctx context.Context, kv jetstream.KeyValue, lock string) error {
	now := time.Now().UTC()
	stamp := []byte(now.Format(time.RFC3339Nano))
	_, err := kv.Create(ctx, lock, stamp)
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	entry, gerr := kv.Get(ctx, lock)
	if gerr != nil {
		return err
	}
	taken, perr := time.Parse(time.RFC3339Nano, string(entry.Value()))
	if perr == nil && now.Sub(taken) < staleReaperLock {
		return err
	}
	// Stale (or unreadable): take it at the revision read, so that of
	// several replicas doing so at once one wins.
	if _, uerr := kv.Update(ctx, lock, stamp, entry.Revision()); uerr != nil {
		return jetstream.ErrKeyExists
	}
	return nil
}
