package config

import (
	"fmt"
	"io"
	"strings"
)

// PrintFlags writes the server flags to w, grouped in etcd's --help sections, with their
// defaults and, for flags Ordo does not implement, how it treats them.
func PrintFlags(w io.Writer) error {
	cfg := &Config{}
	tbl, err := newFlagTable(cfg, new(string), new(bool))
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, g := range helpGroups {
		fmt.Fprintf(&b, "\n%s:\n", g)
		for _, s := range tbl.specs {
			if s.group != g {
				continue
			}
			def := s.def
			if s.helpDef != "" {
				def = s.helpDef
			}
			fmt.Fprintf(&b, "  --%s '%s'\n", s.name, def)
			fmt.Fprintf(&b, "    %s\n", s.usage)
			switch s.handling {
			case noop:
				fmt.Fprintf(&b, "    [no-op in Ordo: %s]\n", s.why)
			case unsupported:
				fmt.Fprintf(&b, "    [not supported by Ordo: %s; a non-default value is an error]\n", s.why)
			}
		}
	}
	b.WriteString(`
Environment:
  Every flag can also be set with an environment variable named ETCD_ followed by the flag name
  in upper case with '-' replaced by '_' (for example ETCD_DATA_DIR). A flag given on the command
  line and its variable may not both be set. With --config-file (or ETCD_CONFIG_FILE), the YAML
  file alone configures the server: other flags and environment variables are ignored.

Flags marked "no-op" are accepted for compatibility with etcd but have no effect in Ordo.
CAUTIOUS with unsafe flag! It may break the guarantees given by the consensus protocol!
`)
	_, err = io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("writing help: %w", err)
	}
	return nil
}
