package apply

import (
	"sync"

	"google.golang.org/protobuf/proto"
)

// Result is what applying one proposed request produced.
type Result struct {
	Resp proto.Message
	Err  error
	// Physical, when not nil, is closed once a physical compaction requested by this entry
	// has finished.
	Physical <-chan struct{}
}

// waiters maps request ids to the channels their proposers wait on.
type waiters struct {
	mu sync.Mutex
	m  map[uint64]chan Result
}

// Wait registers id and returns the channel its result will arrive on.
func (a *Applier) Wait(id uint64) <-chan Result {
	ch := make(chan Result, 1)
	a.waiters.mu.Lock()
	if a.waiters.m == nil {
		a.waiters.m = make(map[uint64]chan Result)
	}
	a.waiters.m[id] = ch
	a.waiters.mu.Unlock()
	return ch
}

// Forget drops the waiter for id (the proposer gave up).
func (a *Applier) Forget(id uint64) {
	a.waiters.mu.Lock()
	delete(a.waiters.m, id)
	a.waiters.mu.Unlock()
}

func (a *Applier) trigger(id uint64, r Result) {
	a.waiters.mu.Lock()
	ch, ok := a.waiters.m[id]
	delete(a.waiters.m, id)
	a.waiters.mu.Unlock()
	if ok {
		ch <- r
	}
}
