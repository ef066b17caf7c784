package node

import (
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// sessionState is where a session is in its life.
type sessionState int

const (
	stateUnknown sessionState = iota
	// stateOpening: units reserved, the engine is setting up.
	stateOpening
	// stateOpen: the engine holds the session.
	stateOpen
)

// session is the node layer's record of one call: what it costs and what
// the proxies need back (dialog, idempotent offer reply).
type session struct {
	id string
	// call tells this session from the others the node held under the
	// same id: the ledger numbers the sessions it takes, in order.
	call        uint64
	callID      string
	units       int
	extraUnits  int // of units, charged for transcoding
	state       sessionState
	transcoding bool
	offerSDP    []byte
	dialog      *callgridv1.Dialog
	created     time.Time
	answered    time.Time
	// sized: an answer (provisional or final) sized the session, so a
	// codec switch the engine reports from then on is charged at once.
	sized bool
	// answerReached: an answer request (provisional or final) came for
	// the session, whatever became of it, so its claimer had the offer's
	// reply and the call went on here (see finish).
	answerReached bool
	// switches counts the changes in transcoding the engine reported
	// (HandleTranscodingChange: codec switches, and negotiations' own),
	// and switchedTo is what the last one said. An answer or an update
	// compares the count from before its engine call with the count when
	// it records the result, to learn whether a report landed meanwhile.
	switches   uint64
	switchedTo bool
	// closeWhenOpen: a delete arrived while the engine was still opening.
	closeWhenOpen bool
	// overdrawn: the session transcodes on units it was refused, charged
	// because the engine took the refused answer up (see markAnswered).
	overdrawn bool
}

// ledger is the node's capacity authority. Every reservation and release
// goes through its lock, so the node can never promise more units than it
// has, however many proxies claim at once.
type ledger struct {
	mu    sync.Mutex
	total int
	used  int
	// transcoded counts sessions with transcoding set, kept with them so a
	// status read does not walk every session.
	transcoded int
	draining   bool
	sessions   map[string]*session
	// calls is how many sessions the ledger has taken: see session.call.
	calls uint64
}

func newLedger(total int) *ledger {
	return &ledger{total: total, sessions: make(map[string]*session)}
}

// reserveOutcome says why reserve did or did not hand out units.
type reserveOutcome int

const (
	reserveUnknown reserveOutcome = iota
	reserveOK
	reserveExists
	reserveFull
	reserveDraining
)

// reserve claims units for a new session, or reports the existing one (a
// retried offer with the same session id).
func (l *ledger) reserve(s *session) (reserveOutcome, *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.sessions[s.id]; ok {
		return reserveExists, old
	}
	if l.draining {
		return reserveDraining, nil
	}
	if l.used+s.units > l.total {
		return reserveFull, nil
	}
	l.used += s.units
	l.calls++
	s.call = l.calls
	s.state = stateOpening
	l.sessions[s.id] = s
	return reserveOK, s
}

// opened marks a session open; it reports false when a delete came in
// meanwhile, in which case the session is already gone from the ledger.
func (l *ledger) opened(id string, sdp []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sessions[id]
	if !ok {
		return false
	}
	if s.closeWhenOpen {
		l.forget(s)
		return false
	}
	s.state = stateOpen
	s.offerSDP = sdp
	return true
}

// release frees a session's units and forgets it. A session still opening
// is only flagged; opened releases it when the engine is done.
func (l *ledger) release(id string) (*session, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sessions[id]
	if !ok {
		return nil, false
	}
	if s.state == stateOpening {
		s.closeWhenOpen = true
		return nil, false
	}
	l.forget(s)
	return s, true
}

// drop forgets a session whose engine setup failed.
func (l *ledger) drop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		l.forget(s)
	}
}

// forget removes a session and what it held; the caller holds the lock.
func (l *ledger) forget(s *session) {
	l.used -= s.units
	if s.transcoding {
		l.transcoded--
	}
	delete(l.sessions, s.id)
}

// lookup returns an open session.
func (l *ledger) lookup(id string) (*session, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sessions[id]
	if !ok || s.state != stateOpen {
		return nil, false
	}
	return s, true
}

// errNoRoomToTranscode refuses an answer whose session would have to grow
// to the transcoded cost beyond the node's free units.
var errNoRoomToTranscode = errors.New("no free capacity units to transcode")

// markAnswered records an answer (a provisional one, or the final one
// after it; only the final one answers the call) and sizes the session for
// it: grown to the transcoded cost when
// the legs need transcoding, back to its own when an answer after it
// (another fork's, or new SDP in the final one) no longer does. change is
// +1 or -1 when the session started or stopped transcoding. switchesBefore
// is switchCount from before the engine call that returned transcoding: if
// a codec switch was reported since, the engine's flag may be older than
// the switch, and the switch's flag is used (handleAnswer makes sure it is
// the newer one). The flag used is returned. It reports
// errNoRoomToTranscode if the growth does not fit: the node never exceeds
// its capacity for a call still being set up, so the answer is refused and
// not recorded as answered. The engine has taken it up all the same, and
// there is no undoing an answer there short of ending the session (a
// refused provisional one leaves the call ringing, its early media
// transcoded), so the session is charged what the engine does, beyond the
// node's units if need be, as for a codec switch, and change says so: the
// node then offers no room until it is settled, and the ledger agrees with
// the engine. Such an overdrawn session is refused again at every answer
// until the node has the units for it or it no longer transcodes.
func (l *ledger) markAnswered(id string, transcoding bool, switchesBefore uint64, provisional bool, transcodeCost int, at time.Time) (change int, transcodes bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, found := l.sessions[id]
	if !found {
		// Ended meanwhile (a delete or a timeout that raced the answer).
		return 0, false, ErrUnknownSession
	}
	if s.switches != switchesBefore {
		transcoding = s.switchedTo
	}
	s.sized = true
	switch {
	case transcoding && s.transcoding && s.overdrawn:
		if l.used > l.total {
			return 0, true, errNoRoomToTranscode
		}
		s.overdrawn = false // the units it holds fit now
	case transcoding == s.transcoding:
	case !transcoding:
		l.stopTranscoding(s)
		change = -1
	case l.used+max(transcodeCost-s.units, 0) > l.total:
		l.startTranscoding(s, transcodeCost)
		s.overdrawn = true
		return +1, true, errNoRoomToTranscode
	default:
		l.startTranscoding(s, transcodeCost)
		change = +1
	}
	if s.answered.IsZero() && !provisional {
		// The call is answered at its final answer: early media is not
		// talk time, and a call that only had it was never answered.
		s.answered = at
	}
	return change, transcoding, nil
}

// switchCount is how many changes in transcoding the engine has reported
// for a session (0 for one the ledger does not hold).
func (l *ledger) switchCount(id string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		return s.switches
	}
	return 0
}

// switched records a change in transcoding that the engine reports (a
// codec switch, or a negotiation's own). Once an answer has sized the
// session it is charged like an update's, beyond the node's units if need
// be (the engine has already switched); before that it is only recorded,
// and the answer being applied takes it up. change is as for markAnswered;
// s is nil for a session the ledger does not hold.
func (l *ledger) switched(id string, on bool, transcodeCost int) (s *session, change int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sessions[id]
	if !ok {
		return nil, 0
	}
	s.switches++
	s.switchedTo = on
	switch {
	case !s.sized || s.transcoding == on:
		return s, 0
	case on:
		l.startTranscoding(s, transcodeCost)
		return s, +1
	default:
		l.stopTranscoding(s)
		return s, -1
	}
}

// startTranscoding grows s to the transcode cost; stopTranscoding gives the
// extra units back. The caller holds l.mu.
func (l *ledger) startTranscoding(s *session, transcodeCost int) {
	s.extraUnits = max(transcodeCost-s.units, 0)
	s.units += s.extraUnits
	l.used += s.extraUnits
	s.transcoding = true
	l.transcoded++
}

func (l *ledger) stopTranscoding(s *session) {
	s.overdrawn = false
	s.units -= s.extraUnits
	l.used -= s.extraUnits
	s.extraUnits = 0
	s.transcoding = false
	l.transcoded--
}

// updateTranscoding records whether an update (a re-INVITE, an UPDATE in
// the early dialog, or the rollback of a rejected one) left a session an
// answer has sized transcoding, and returns the change (as for
// markAnswered) and the flag recorded. A live call is never refused for
// it: one that starts transcoding is charged the transcode cost even
// beyond the node's units, so that the node offers no room until calls
// end; one that stops gives the extra units back.
//
// transcoding is the flag the engine's reply gave and switchesBefore
// switchCount from before the engine call. There is no asking the engine
// again, so a change it reported since (HandleTranscodingChange) wins: the
// engine reports every change, the update's own included, one at a time
// and in order, so the last report is what the engine does now, whereas
// the reply is stale if a codec switch came after it. With no report
// since, the update changed nothing the ledger has not been told, or the
// engine reports nothing, and the reply stands.
func (l *ledger) updateTranscoding(id string, transcoding bool, switchesBefore uint64, transcodeCost int) (change int, transcodes bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, found := l.sessions[id]
	if !found {
		return 0, transcoding
	}
	if s.switches != switchesBefore {
		transcoding = s.switchedTo
	}
	switch {
	case !s.sized || s.transcoding == transcoding:
		return 0, s.transcoding
	case transcoding:
		l.startTranscoding(s, transcodeCost)
		return +1, true
	default:
		l.stopTranscoding(s)
		return -1, false
	}
}

// transcodingNow is whether the ledger has a session transcoding, and
// switchCount with it.
func (l *ledger) transcodingNow(id string) (transcoding bool, switches uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		return s.transcoding, s.switches
	}
	return false, 0
}

// answerArrived records that an answer request reached a session.
func (l *ledger) answerArrived(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		s.answerReached = true
	}
}

func (l *ledger) setDialog(id string, d *callgridv1.Dialog) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok && d != nil {
		s.dialog = d
	}
}

// snapshot is the ledger's numbers at one instant.
type snapshot struct {
	total, used, sessions, transcoded int
	draining                          bool
}

func (l *ledger) snapshot() snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return snapshot{total: l.total, used: l.used, sessions: len(l.sessions), transcoded: l.transcoded, draining: l.draining}
}

func (l *ledger) setDraining() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.draining
	l.draining = true
	return !was
}

// ids lists every session.
func (l *ledger) ids() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.sessions))
	for id := range l.sessions {
		out = append(out, id)
	}
	return out
}

// unansweredSince returns the open sessions created before cutoff that
// have had no final answer.
func (l *ledger) unansweredSince(cutoff time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id, s := range l.sessions {
		if unansweredSince(s, cutoff) {
			ids = append(ids, id)
		}
	}
	return ids
}

// releaseUnansweredSince releases a session as release does, but only if
// it is still one unansweredSince would list: the list is only a snapshot,
// and a final answer that lands after it makes the session a call, which
// the setup timeout must leave alone.
func (l *ledger) releaseUnansweredSince(id string, cutoff time.Time) (*session, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sessions[id]
	if !ok || !unansweredSince(s, cutoff) {
		return nil, false
	}
	l.forget(s)
	return s, true
}

// unansweredSince is whether s is open, was created before cutoff and has
// had no final answer. The caller holds l.mu.
func unansweredSince(s *session, cutoff time.Time) bool {
	return s.state == stateOpen && s.answered.IsZero() && s.created.Before(cutoff)
}

// writeCallRecord hands the call record of an answered session to write
// with the ledger locked. A release takes the same lock, so the removal of
// the record that ending the session queues always comes after the write:
// a record written after its removal would outlive the call and have it
// hung up, and its end published again, when the node next starts.
//
// write is given the session's call number with the record, which its end
// carries too: the removal it queues is of that call's record only.
func (l *ledger) writeCallRecord(id, nodeID string, write func(call uint64, rec *callgridv1.CallRecord)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rec := l.callRecordLocked(id, nodeID); rec != nil {
		write(l.sessions[id].call, rec)
	}
}

// callRecord is what the bus keeps of an answered session so that a proxy
// can hang it up should this node die.
func (l *ledger) callRecord(id, nodeID string) *callgridv1.CallRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.callRecordLocked(id, nodeID)
}

func (l *ledger) callRecordLocked(id, nodeID string) *callgridv1.CallRecord {
	s, ok := l.sessions[id]
	if !ok || s.answered.IsZero() {
		return nil
	}
	return &callgridv1.CallRecord{
		NodeId: nodeID, SessionId: s.id, CallId: s.callID,
		Dialog: proto.CloneOf(s.dialog), AnsweredUnixMs: s.answered.UnixMilli(),
	}
}
