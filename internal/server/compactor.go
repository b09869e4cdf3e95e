package server

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/mvcc"
)

// compactor removes superseded versions after a compaction was applied, one at a time, in the
// background, so the apply loop never waits for it.
type compactor struct {
	kv     *mvcc.Store
	lg     *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		queue  []compaction
		signal chan struct{}
	}
}

type compaction struct {
	rev  int64
	done chan struct{}
}

func newCompactor(kv *mvcc.Store, lg *zap.Logger) *compactor {
	c := &compactor{kv: kv, lg: lg}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.signal = make(chan struct{}, 1)
	c.wg.Add(1)
	go c.run()
	return c
}

// schedule queues the physical compaction at rev; done is closed when it finished.
func (c *compactor) schedule(rev int64, done chan struct{}) {
	c.mu.Lock()
	c.mu.queue = append(c.mu.queue, compaction{rev, done})
	c.mu.Unlock()
	select {
	case c.mu.signal <- struct{}{}:
	default:
	}
}

func (c *compactor) run() {
	defer c.wg.Done()
	for {
		select {
		case <-c.mu.signal:
		case <-c.ctx.Done():
			return
		}
		for {
			c.mu.Lock()
			if len(c.mu.queue) == 0 {
				c.mu.Unlock()
				break
			}
			job := c.mu.queue[0]
			c.mu.queue = c.mu.queue[1:]
			c.mu.Unlock()
			if err := c.kv.Compact(c.ctx, job.rev); err != nil {
				if c.ctx.Err() != nil {
					return
				}
				c.lg.Error("physical compaction failed", zap.Int64("revision", job.rev), zap.Error(err))
			} else {
				c.lg.Info("finished scheduled compaction", zap.Int64("compact-revision", job.rev))
			}
			close(job.done)
		}
	}
}

func (c *compactor) stop() {
	c.cancel()
	c.wg.Wait()
}
