package node

import "time"

// A handover of the previous run's calls that fails is tried again,
// before the node serves, up to handoverAttempts times in all, waiting
// handoverRetryMin doubling between them, and none starts once
// handoverRetryFor has passed since the first.
const (
	handoverAttempts = 4
	handoverRetryMin = time.Second
	handoverRetryFor = 30 * time.Second
)
