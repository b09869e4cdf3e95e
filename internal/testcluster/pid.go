package testcluster

// Pid returns the operating system process id of a member started in process mode, and 0
// for an in-process or stopped member.
func (m *Member) Pid() int {
	if m.proc == nil || m.proc.cmd == nil || m.proc.cmd.Process == nil {
		return 0
	}
	return m.proc.cmd.Process.Pid
}
