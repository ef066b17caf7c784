package fleet

import (
	"math/rand/v2"
)

// candidate is a node that could take a claim, with its free units as this
// view believes them.
type candidate struct {
	id   string
	free int
}

// Candidates orders the nodes that could take a session costing units, best
// first. Each position is filled by the power of two choices: of two nodes
// drawn at random from those left, the one with more free units. Many proxy
// replicas with slightly stale views then spread their claims instead of
// all herding onto the single emptiest node, while fuller nodes still get
// fewer claims. Draining, refusing and full nodes are left out.
func (v *View) Candidates(units int, rng *rand.Rand) []string {
	pool := v.eligible(units)
	order := make([]string, 0, len(pool))
	for len(pool) > 0 {
		i := rng.IntN(len(pool))
		if len(pool) > 1 {
			j := rng.IntN(len(pool) - 1)
			if j >= i {
				j++
			}
			if pool[j].free > pool[i].free {
				i = j
			}
		}
		order = append(order, pool[i].id)
		pool[i] = pool[len(pool)-1]
		pool = pool[:len(pool)-1]
	}
	return order
}

func (v *View) eligible(units int) []candidate {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	cutoff := now.Add(-TTLHeartbeats * v.interval)
	out := make([]candidate, 0, len(v.nodes))
	for id, m := range v.nodes {
		st := m.status
		if st.GetDraining() || m.seen.Before(cutoff) || now.Before(m.refusedUntil) {
			continue
		}
		free := int(st.GetCapacityTotal()) - int(st.GetCapacityUsed()) - m.pending
		if free < units {
			continue
		}
		out = append(out, candidate{id: id, free: free})
	}
	return out
}
