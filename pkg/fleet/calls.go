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

// claimHold bounds how long one taking of a node's records holds the
// reaper lock: past staleReaperLock another replica takes a lock over as
// one left behind, and both would then hang the same calls up.
const claimHold = staleReaperLock / 2

// recordRemoveTimeout bounds the removal of one claimed record.
const recordRemoveTimeout = 2 * time.Second

// ClaimOrphans takes the call records of a node that left the fleet. Exactly
// one caller among the proxy replicas gets them (the others get none); the
// records are removed from the bucket as they are taken, so the calls are
// hung up once.
//
// It returns every record or an error, never a part with no error: the
// records are all read before any is removed, so a claim cut short (its
// context, a failed read) removes nothing and the caller, trying again,
// finds them all. Once all are read they are the caller's: a removal that
// fails then stops the removals and leaves the rest in the bucket, where
// only a later claim of the same node id finds them again (a call hung up
// twice, its end published twice, which consumers keep once).
func ClaimOrphans(ctx context.Context, kv jetstream.KeyValue, nodeID string) ([]*callgridv1.CallRecord, error) {
	var records []*callgridv1.CallRecord
	_, err := withReaperLock(ctx, kv, nodeID, 0, false, func(ctx context.Context) error {
		keys, err := listCallKeys(ctx, kv, nodeID)
		if err != nil {
			return err
		}
		var taken []string
		for _, key := range keys {
			rec, found, err := readCallRecord(ctx, kv, key)
			if err != nil {
				return err
			}
			if !found {
				continue
			}
			taken = append(taken, key)
			if rec != nil {
				records = append(records, rec)
			}
		}
		for _, key := range taken {
			if removeCallRecord(ctx, kv, key, time.Time{}) != nil {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return records, nil
}

// TakeOrphans hands the call records of nodeID to take one at a time and
// removes each only once take has returned nil for it, so a taker that
// dies part way leaves every call it had not dealt with recorded for
// whoever takes them next. Like ClaimOrphans it holds the node's reaper
// lock (a caller that finds it held takes nothing), and it stops at the
// first error (take's, a read's, a removal's, ctx's) with the rest left in
// place and returns it with how many records were taken. A record taken
// whose removal failed is taken again next time. A caller that tries
// again after an error uses an OrphanTaker instead.
//
// Unlike ClaimOrphans it is over by ctx's deadline, the lock's release
// included: it stops taking records recordRemoveTimeout short of it, so
// that the release has that long, and a removal under way then is cut
// short with the claim (its record is taken again next time).
func TakeOrphans(ctx context.Context, kv jetstream.KeyValue, nodeID string, take func(context.Context, *callgridv1.CallRecord) error) (int, error) {
	return NewOrphanTaker(kv, nodeID).Take(ctx, take)
}

// OrphanTaker takes the call records of one node as TakeOrphans does,
// attempt after attempt: a node handing over its previous run's calls
// tries again when an attempt fails. An attempt that fails may fail to
// release its reaper lock too (the bucket failing for a moment fails
// both), and that lock, to any taker, is one another replica holds: the
// next attempt would take nothing and report success, with the calls left
// recorded. The lock's value is a bare time stamp, which every reader
// parses and takes one it cannot parse for stale, so the owner cannot be
// told from it; the OrphanTaker keeps instead the revision of the lock it
// left behind and takes that lock again while it is still at that
// revision. A lock at any other revision is another replica's, and is left
// to it. An OrphanTaker is for one goroutine at a time.
//
// It takes every record under the node's id, so it is for a node's
// previous run's calls before the node serves, when each is an old one:
// once the node serves, the records of its own calls are there too.
type OrphanTaker struct {
	kv     jetstream.KeyValue
	nodeID string
	// left is the revision of the reaper lock an attempt failed to
	// release, 0 for none.
	left uint64
}

// NewOrphanTaker returns a taker of the call records of nodeID in kv.
func NewOrphanTaker(kv jetstream.KeyValue, nodeID string) *OrphanTaker {
	return &OrphanTaker{kv: kv, nodeID: nodeID}
}

// Take is one attempt of TakeOrphans.
func (o *OrphanTaker) Take(ctx context.Context, take func(context.Context, *callgridv1.CallRecord) error) (int, error) {
	var taken int
	left, err := withReaperLock(ctx, o.kv, o.nodeID, o.left, true, func(ctx context.Context) error {
		// The claim's context always has a deadline (claimHold at most),
		// and the removals end with it too.
		by, _ := ctx.Deadline()
		keys, err := listCallKeys(ctx, o.kv, o.nodeID)
		if err != nil {
			return err
		}
		for _, key := range keys {
			rec, found, err := readCallRecord(ctx, o.kv, key)
			if err != nil {
				return err
			}
			if !found {
				continue
			}
			if rec != nil {
				if err := take(ctx, rec); err != nil {
					return fmt.Errorf("take call %s: %w", key, err)
				}
				taken++
			}
			if err := removeCallRecord(ctx, o.kv, key, by); err != nil {
				return err
			}
		}
		return nil
	})
	o.left = left
	return taken, err
}

// withReaperLock runs claim holding the reaper lock of nodeID, bounded by
// claimHold, and releases the lock after. When another replica holds it,
// claim is not run and the result is nil: that replica takes the calls.
// mine is the revision of a lock the caller itself left behind (0 for
// none), which it takes again. bounded has it all over by ctx's deadline:
// claim then ends recordRemoveTimeout before it, which the release has,
// and the release ends at it. Otherwise the release outlasts ctx by its
// own timeout. left is the revision of the lock held when its release
// failed, 0 once released (or never taken).
func withReaperLock(ctx context.Context, kv jetstream.KeyValue, nodeID string, mine uint64, bounded bool, claim func(context.Context) error) (left uint64, err error) {
	lock := reaperKeyPrefix + nodeID
	rev, err := takeReaperLock(ctx, kv, lock, mine)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, nil
		}
		// A lock of its own that could not be read or taken again is
		// still there, and still its own.
		return mine, fmt.Errorf("claim orphans of %s: %w", nodeID, err)
	}
	hold, by := claimHold, time.Time{}
	if deadline, ok := ctx.Deadline(); ok && bounded {
		hold, by = min(hold, time.Until(deadline)-recordRemoveTimeout), deadline
	}
	cctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()
	cerr := claim(cctx)
	// Release the lock once done so a node that returns under the same id
	// and dies again can be reaped again; only at the revision taken, as
	// one taken over since (held past staleReaperLock) is another's.
	released := releaseReaperLock(ctx, kv, lock, rev, by)
	if released == nil {
		rev = 0
	}
	if cerr != nil {
		if released != nil {
			return rev, fmt.Errorf("claim orphans of %s: %w (its reaper lock left: %v)", nodeID, cerr, released)
		}
		return rev, fmt.Errorf("claim orphans of %s: %w", nodeID, cerr)
	}
	return rev, nil
}

// settling is the context of a removal that must outlast ctx's end, the
// work it settles being done: bounded by recordRemoveTimeout and, unless
// by is zero, by by.
func settling(ctx context.Context, by time.Time) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(recordRemoveTimeout)
	if !by.IsZero() && by.Before(deadline) {
		deadline = by
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// releaseReaperLock removes lock if it is still at rev, bounded by its own
// timeout rather than ctx (and by by, unless zero): a lock left behind
// keeps every replica from reaping the node until it turns stale. One at
// another revision is no longer the caller's and counts as released.
func releaseReaperLock(ctx context.Context, kv jetstream.KeyValue, lock string, rev uint64, by time.Time) error {
	rctx, cancel := settling(ctx, by)
	defer cancel()
	err := kv.Delete(rctx, lock, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("release reaper lock %s: %w", lock, err)
	}
	return nil
}

// listCallKeys lists the keys of nodeID's call records, all of them or an
// error.
func listCallKeys(ctx context.Context, kv jetstream.KeyValue, nodeID string) ([]string, error) {
	lister, err := kv.ListKeysFiltered(ctx, nodeID+".*")
	if err != nil {
		return nil, fmt.Errorf("list calls: %w", err)
	}
	var keys []string
	for key := range lister.Keys() {
		if strings.HasPrefix(key, nodeID+".") {
			keys = append(keys, key)
		}
	}
	// The lister ends its list early when ctx ends, and says nothing of
	// it: the keys are all there only if ctx is still live.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list calls: %w", err)
	}
	return keys, nil
}

// readCallRecord reads one call record. found is false for a record
// removed since it was listed (the call ended normally); rec is nil for
// one that does not decode, which can be removed but not hung up. Any
// other failure is an error: the record may well be there.
func readCallRecord(ctx context.Context, kv jetstream.KeyValue, key string) (rec *callgridv1.CallRecord, found bool, err error) {
	entry, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read call %s: %w", key, err)
	}
	rec = new(callgridv1.CallRecord)
	if proto.Unmarshal(entry.Value(), rec) != nil {
		return nil, true, nil
	}
	return rec, true, nil
}

// removeCallRecord removes a record once its call is taken care of. It is
// bounded by its own timeout rather than ctx (and by by, unless zero): the
// call is taken, and a record left behind has it hung up again.
func removeCallRecord(ctx context.Context, kv jetstream.KeyValue, key string, by time.Time) error {
	rctx, cancel := settling(ctx, by)
	defer cancel()
	if err := kv.Delete(rctx, key); err != nil {
		return fmt.Errorf("remove call %s: %w", key, err)
	}
	return nil
}

// takeReaperLock creates lock, or takes it over when the replica that
// created it left it behind (it died before its deferred delete): a lock
// older than staleReaperLock. mine is the revision of a lock the caller
// left behind itself (0 for none): found at that revision, the lock is
// taken again whatever its age. It returns the revision of the lock taken;
// ErrKeyExists means another replica holds it.
func takeReaperLock(ctx context.Context, kv jetstream.KeyValue, lock string, mine uint64) (uint64, error) {
	now := time.Now().UTC()
	stamp := []byte(now.Format(time.RFC3339Nano))
	rev, err := kv.Create(ctx, lock, stamp)
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return rev, err
	}
	entry, gerr := kv.Get(ctx, lock)
	if gerr != nil {
		if mine != 0 {
			// The lock found may well be its own: taking it for
			// another's would take nothing and report success.
			return 0, fmt.Errorf("read reaper lock %s: %w", lock, gerr)
		}
		return 0, err
	}
	if mine == 0 || entry.Revision() != mine {
		taken, perr := time.Parse(time.RFC3339Nano, string(entry.Value()))
		if perr == nil && now.Sub(taken) < staleReaperLock {
			return 0, err
		}
	}
	// Its own, or stale (or unreadable): take it at the revision read, so
	// that of several replicas doing so at once one wins.
	rev, uerr := kv.Update(ctx, lock, stamp, entry.Revision())
	switch {
	case uerr == nil:
		return rev, nil
	case mine != 0 && entry.Revision() == mine && !errors.Is(uerr, jetstream.ErrKeyRevisionMismatch):
		// Still its own, for all it knows: tried again next time.
		return 0, fmt.Errorf("take reaper lock %s again: %w", lock, uerr)
	}
	return 0, jetstream.ErrKeyExists
}
