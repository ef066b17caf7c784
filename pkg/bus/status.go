package bus

import (
	"fmt"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// StatusError is a reply whose status was not OK: the node answered, and
// said no for the reason in Status.
type StatusError struct {
	Op     string
	NodeID string
	Status callgridv1.Status
	Detail string
}

func (e *StatusError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%s on node %s: %s", e.Op, e.NodeID, e.Status)
	}
	return fmt.Sprintf("%s on node %s: %s: %s", e.Op, e.NodeID, e.Status, e.Detail)
}
