package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// keyAlarmPfx holds the active alarms: + member id (8) + alarm type (4) -> empty. Alarms are
// state-machine state (prefix 0x02), written by the apply loop, so they survive restarts and
// travel with snapshots.
var keyAlarmPfx = []byte{PrefixMeta, 'n'}

func alarmKey(a *pb.AlarmMember) []byte {
	k := make([]byte, 0, len(keyAlarmPfx)+12)
	k = append(k, keyAlarmPfx...)
	k = binary.BigEndian.AppendUint64(k, a.MemberID)
	return binary.BigEndian.AppendUint32(k, uint32(a.Alarm))
}

// Alarms returns the stored active alarms ordered by member id, then alarm type.
func Alarms(r pebble.Reader) ([]*pb.AlarmMember, error) {
	upper := append(append([]byte(nil), keyAlarmPfx[:len(keyAlarmPfx)-1]...), keyAlarmPfx[len(keyAlarmPfx)-1]+1)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: keyAlarmPfx, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("iterate alarms: %w", err)
	}
	defer it.Close()
	var out []*pb.AlarmMember
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != len(keyAlarmPfx)+12 {
			return nil, fmt.Errorf("%w: alarm key %x", ErrCorrupt, k)
		}
		k = k[len(keyAlarmPfx):]
		out = append(out, &pb.AlarmMember{
			MemberID: binary.BigEndian.Uint64(k),
			Alarm:    pb.AlarmType(binary.BigEndian.Uint32(k[8:])),
		})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("iterate alarms: %w", err)
	}
	return out, nil
}

// SetAlarm records the active alarm a in b.
func SetAlarm(b *pebble.Batch, a *pb.AlarmMember) error {
	if err := b.Set(alarmKey(a), nil, nil); err != nil {
		return fmt.Errorf("record alarm: %w", err)
	}
	return nil
}

// DeleteAlarm removes the alarm a in b.
func DeleteAlarm(b *pebble.Batch, a *pb.AlarmMember) error {
	if err := b.Delete(alarmKey(a), nil); err != nil {
		return fmt.Errorf("remove alarm: %w", err)
	}
	return nil
}
