package server_test

import (
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// activateAlarm raises an alarm by request, as `etcdctl` cannot but the API allows.
func activateAlarm(t testing.TB, cli *clientv3.Client, member uint64, alarm pb.AlarmType) *pb.AlarmResponse {
	t.Helper()
	resp, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx(t), &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: member, Alarm: alarm,
	})
	if err != nil {
		t.Fatalf("activate alarm: %v", err)
	}
	return resp
}

func alarmList(t testing.TB, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.AlarmList(ctx(t))
	if err != nil {
		t.Fatalf("alarm list: %v", err)
	}
	var out []string
	for _, a := range resp.Alarms {
		out = append(out, fmt.Sprintf("%x:%s", a.MemberID, a.Alarm))
	}
	return out
}

// TestAlarmNoSpace checks the NOSPACE alarm as etcd has it: raised by request, replicated,
// writes refused on every member while it is active, reads and space-freeing requests still
// served, listed in Status, kept across a restart, and disarmed the way etcdctl does it.
func TestAlarmNoSpace(t *testing.T) {
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		cli := c.Client()
		k := keyer(t)
		mustPut(t, cli, k("a"), "1")
		mustPut(t, cli, k("b"), "2")
		lease, err := cli.Grant(ctx(t), 60)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		if got := alarmList(t, cli); len(got) != 0 {
			t.Fatalf("alarms on a new cluster: %v", got)
		}
		st, err := cli.Status(ctx(t), c.Members[0].ClientURL)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		id := st.Header.MemberId
		resp := activateAlarm(t, cli, id, pb.AlarmType_NOSPACE)
		if len(resp.Alarms) != 1 || resp.Alarms[0].MemberID != id || resp.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
			t.Fatalf("activate response alarms = %v", resp.Alarms)
		}
		// Raising it again changes nothing and answers with no alarm, as etcd does.
		if resp := activateAlarm(t, cli, id, pb.AlarmType_NOSPACE); len(resp.Alarms) != 0 {
			t.Fatalf("second activate response alarms = %v", resp.Alarms)
		}
		want := []string{fmt.Sprintf("%x:NOSPACE", id)}
		if got := alarmList(t, cli); !slices.Equal(got, want) {
			t.Fatalf("alarm list = %v, want %v", got, want)
		}

		check := func(t *testing.T) {
			for i, m := range c.Members {
				mc := m.Client()
				// Every member applied the alarm and refuses writes.
				_, err := mc.Put(ctx(t), k("c"), "3")
				wantErr(t, fmt.Sprintf("member %d put", i), err, rpctypes.ErrGRPCNoSpace)
				_, err = mc.Txn(ctx(t)).Then(clientv3.OpDelete(k("x")), clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut(k("c"), "3")}, nil)).Commit()
				wantErr(t, fmt.Sprintf("member %d txn with a nested put", i), err, rpctypes.ErrGRPCNoSpace)
				_, err = mc.Txn(ctx(t)).If(clientv3.Compare(clientv3.Version(k("a")), "=", 0)).Else(clientv3.OpPut(k("c"), "3")).Commit()
				wantErr(t, fmt.Sprintf("member %d txn with a put in else", i), err, rpctypes.ErrGRPCNoSpace)
				_, err = mc.Grant(ctx(t), 60)
				wantErr(t, fmt.Sprintf("member %d lease grant", i), err, rpctypes.ErrGRPCNoSpace)
				// Reads work.
				if got := getOne(t, mc, k("a")); got == nil || string(got.Value) != "1" {
					t.Fatalf("member %d get a = %v", i, got)
				}
				if _, err := mc.Txn(ctx(t)).Then(clientv3.OpGet(k("a"))).Commit(); err != nil {
					t.Fatalf("member %d read-only txn: %v", i, err)
				}
				st, err := mc.Status(ctx(t), m.ClientURL)
				if err != nil {
					t.Fatalf("member %d status: %v", i, err)
				}
				wantErrs := []string{fmt.Sprintf("memberID:%d alarm:NOSPACE ", id)}
				if !slices.Equal(st.Errors, wantErrs) {
					t.Fatalf("member %d status errors = %q, want %q", i, st.Errors, wantErrs)
				}
			}
		}
		t.Run("Refused", check)

		t.Run("Recovery", func(t *testing.T) {
			// What an operator needs to free space works.
			mustDelete(t, cli, k("b"))
			if _, err := cli.Txn(ctx(t)).Then(clientv3.OpDelete(k("nothing"))).Commit(); err != nil {
				t.Fatalf("txn with only deletes: %v", err)
			}
			if _, err := cli.Compact(ctx(t), currentRev(t, cli)); err != nil {
				t.Fatalf("compact: %v", err)
			}
			if _, err := cli.Revoke(ctx(t), lease.ID); err != nil {
				t.Fatalf("revoke: %v", err)
			}
		})

		t.Run("SurvivesRestart", func(t *testing.T) {
			for _, m := range c.Members {
				m.Stop()
			}
			errs := make(chan error, len(c.Members))
			for _, m := range c.Members {
				go func() { errs <- m.Restart() }()
			}
			for range c.Members {
				if err := <-errs; err != nil {
					t.Fatalf("restart: %v", err)
				}
			}
			if _, err := c.Leader(30 * time.Second); err != nil {
				t.Fatalf("leader: %v", err)
			}
			check(t)
		})

		t.Run("Disarm", func(t *testing.T) {
			cli := c.Client()
			// What etcdctl alarm disarm sends: every listed alarm, deactivated.
			resp, err := cli.AlarmDisarm(ctx(t), &clientv3.AlarmMember{})
			if err != nil {
				t.Fatalf("disarm: %v", err)
			}
			if len(resp.Alarms) != 1 {
				t.Fatalf("disarm response alarms = %v", resp.Alarms)
			}
			if got := alarmList(t, cli); len(got) != 0 {
				t.Fatalf("alarms after disarm: %v", got)
			}
			for i, m := range c.Members {
				mustPut(t, m.Client(), k(fmt.Sprintf("after-%d", i)), "ok")
				st, err := m.Client().Status(ctx(t), m.ClientURL)
				if err != nil || len(st.Errors) != 0 {
					t.Fatalf("member %d status errors = %v, %v", i, st.Errors, err)
				}
			}
			if _, err := cli.Grant(ctx(t), 60); err != nil {
				t.Fatalf("grant after disarm: %v", err)
			}
		})
	})
}

// TestAlarmQuota fills a member past --quota-backend-bytes: the write that would pass it is
// refused with etcd's NOSPACE error, the member raises the NOSPACE alarm through raft, the
// writes acknowledged before are all there, and deletes still work.
func TestAlarmQuota(t *testing.T) {
	const quota = 8 << 20
	c := testcluster.New(t, 1, testcluster.Options{Args: []string{"--quota-backend-bytes", fmt.Sprint(quota)}})
	cli := c.Client()
	// Incompressible values: the quota bounds the database's size on disk, and Pebble would
	// compress a repeated byte to almost nothing, letting more logical bytes in.
	raw := make([]byte, 256<<10)
	var acked []string
	var err error
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("q/%04d", i)
		if _, rerr := rand.Read(raw); rerr != nil {
			t.Fatal(rerr)
		}
		if _, err = cli.Put(ctx(t), key, string(raw)); err != nil {
			break
		}
		acked = append(acked, key)
	}
	wantErr(t, "put past the quota", err, rpctypes.ErrGRPCNoSpace)
	if len(acked) == 0 || len(acked)*len(raw) > quota {
		t.Fatalf("%d puts of %d bytes acknowledged under a quota of %d bytes", len(acked), len(raw), quota)
	}
	st, err := cli.Status(ctx(t), c.Members[0].ClientURL)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if want := fmt.Sprintf("%x:NOSPACE", st.Header.MemberId); !slices.Equal(alarmList(t, cli), []string{want}) {
		t.Fatalf("alarm list = %v, want [%s]", alarmList(t, cli), want)
	}
	if st.DbSizeQuota != quota {
		t.Errorf("status quota = %d, want %d", st.DbSizeQuota, quota)
	}
	// A small write is refused too: the alarm caps the cluster.
	_, err = cli.Put(ctx(t), "small", "x")
	wantErr(t, "small put under the alarm", err, rpctypes.ErrGRPCNoSpace)
	resp, err := cli.Get(ctx(t), "q/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got := keysOf(resp.Kvs); !slices.Equal(got, acked) {
		t.Fatalf("keys after the quota was hit: %d, want the %d acknowledged", len(got), len(acked))
	}
	if _, err := cli.Delete(ctx(t), "q/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete under the alarm: %v", err)
	}
}

// TestAlarmDiskReserve runs a member whose --disk-reserve-bytes is more than any filesystem
// has free: its first write is refused with etcd's NOSPACE error and raises the NOSPACE
// alarm, while reads and deletes keep working.
func TestAlarmDiskReserve(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Args: []string{"--disk-reserve-bytes", fmt.Sprint(int64(1) << 62)}})
	cli := c.Client()
	_, err := cli.Put(ctx(t), "reserve", "v")
	wantErr(t, "put with less free space than the reserve", err, rpctypes.ErrGRPCNoSpace)
	st, err := cli.Status(ctx(t), c.Members[0].ClientURL)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if want := fmt.Sprintf("%x:NOSPACE", st.Header.MemberId); !slices.Equal(alarmList(t, cli), []string{want}) {
		t.Fatalf("alarm list = %v, want [%s]", alarmList(t, cli), want)
	}
	if _, err := cli.Get(ctx(t), "reserve"); err != nil {
		t.Fatalf("get under the alarm: %v", err)
	}
	if _, err := cli.Delete(ctx(t), "reserve"); err != nil {
		t.Fatalf("delete under the alarm: %v", err)
	}
}
