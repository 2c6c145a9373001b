package cache

// WaitIdle waits until no refresh, probe or prefetch runs, so that tests
// see the state they left behind.
func (c *Cache) WaitIdle() { c.waitIdle() }

// Waiting returns how many readers have joined a call and wait for it.
func (c *Cache) Waiting() int64 { return c.waiting.Load() }
