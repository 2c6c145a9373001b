package cache

// WaitIdle waits until no refresh, probe or prefetch runs, so that tests
// see the state they left behind.
func (c *Cache) WaitIdle() { c.waitIdle() }
