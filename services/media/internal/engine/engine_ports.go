package engine

// PortUsage reports the RTP port pairs in use and available, for the
// node's fleet status.
func (e *Engine) PortUsage() (used, total int) {
	return e.pool.InUse(), e.pool.Total()
}
