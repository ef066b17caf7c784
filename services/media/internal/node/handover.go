package node

import "time"

// A handover of the previous run's calls that fails is tried again,
// before the node serves, up to handoverAttempts times in all, waiting
// handoverRetryMin doubling between them. All of them are over
// handoverRetryFor after the first started, give or take the removal of
// the record in hand and the release of the reaper lock, each bounded by
// its own short timeout: none starts that would not, and one under way
// then is cut short.
const (
	handoverAttempts = 4
	handoverRetryMin = time.Second
	handoverRetryFor = 30 * time.Second
)
