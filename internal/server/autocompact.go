package server

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/config"
)

// revisionCompactInterval is how often revision-mode auto-compaction looks at the revision.
const revisionCompactInterval = 5 * time.Minute

// startAutoCompaction runs the configured auto-compaction on this member while it leads:
//   - periodic, retention P: every P/10 (at most every hour) it compacts to the revision that
//     was current P ago;
//   - revision, retention N: every five minutes it compacts to current revision - N.
func (m *Member) startAutoCompaction() error {
	var (
		interval time.Duration
		target   func(now time.Time) int64
	)
	switch m.cfg.AutoCompactionMode {
	case config.CompactionModePeriodic:
		period, err := m.cfg.AutoCompactionPeriod()
		if err != nil || period == 0 {
			return err
		}
		interval = min(period/10, time.Hour)
		if interval <= 0 {
			interval = period
		}
		var samples []revSample
		target = func(now time.Time) int64 {
			samples = append(samples, revSample{now, m.kv.CurrentRev()})
			rev := int64(0)
			for len(samples) > 0 && now.Sub(samples[0].at) >= period {
				rev = samples[0].rev
				samples = samples[1:]
			}
			return rev
		}
	case config.CompactionModeRevision:
		keep, err := m.cfg.AutoCompactionRevisions()
		if err != nil || keep == 0 {
			return err
		}
		interval = revisionCompactInterval
		target = func(time.Time) int64 { return m.kv.CurrentRev() - keep }
	default:
		return nil
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case now := <-ticker.C:
				rev := target(now)
				if m.node.Leader() != m.id || rev <= m.kv.CompactRev() || rev <= 0 {
					continue
				}
				ctx, cancel := context.WithTimeout(m.ctx, m.node.RequestTimeout())
				_, err := m.propose(ctx, &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}})
				cancel()
				switch {
				case err == nil:
					m.lg.Info("auto compaction", zap.String("mode", m.cfg.AutoCompactionMode), zap.Int64("revision", rev))
				case errors.Is(err, rpctypes.ErrGRPCCompacted):
				default:
					m.lg.Warn("auto compaction failed", zap.Int64("revision", rev), zap.Error(err))
				}
			case <-m.ctx.Done():
				return
			}
		}
	}()
	return nil
}

type revSample struct {
	at  time.Time
	rev int64
}
