package udpio

import (
	"fmt"
	"sync/atomic"
)

// Group is a fixed set of loops that sockets are spread over.
type Group struct {
	loops []*Loop
	next  atomic.Uint32
}

// NewGroup starts n loops (at least one).
func NewGroup(n int, readErr func(error)) (*Group, error) {
	g := &Group{}
	for range max(n, 1) {
		l, err := NewLoop(readErr)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("start event loop %d: %w", len(g.loops), err)
		}
		g.loops = append(g.loops, l)
	}
	return g, nil
}

// Pick returns the index of the next loop in turn. Sockets that share
// state (the legs of one call) go to the same loop, so their handlers never
// run at once.
func (g *Group) Pick() int {
	// The remainder is taken unsigned: converted first, a count past 2^31
	// is negative where int has 32 bits.
	return int((g.next.Add(1) - 1) % uint32(len(g.loops)))
}

// At returns loop i of the group, 0 <= i < Size.
func (g *Group) At(i int) *Loop { return g.loops[i] }

// Size is the number of loops.
func (g *Group) Size() int { return len(g.loops) }

// Close stops every loop.
func (g *Group) Close() {
	for _, l := range g.loops {
		l.Close()
	}
}
