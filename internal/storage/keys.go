package storage

// Key prefixes. Each subsystem owns the keys below its prefix and nothing else.
const (
	PrefixRaft  byte = 0x01
	PrefixMeta  byte = 0x02
	PrefixMVCC  byte = 0x03
	PrefixLease byte = 0x04
	PrefixAuth  byte = 0x05
)

// StateStart and StateEnd bound the state-machine keys: every key in [StateStart, StateEnd) is
// carried by a snapshot. The raft prefix is below StateStart.
var (
	StateStart = []byte{PrefixMeta}
	StateEnd   = []byte{0xff}
)
