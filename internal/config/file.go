package config

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v2"
)

// nestedSections are the configuration-file keys whose values are maps of further settings
// (etcd's client-transport-security, peer-transport-security, discovery-config, socket-options).
var nestedSections = []string{"client-transport-security", "peer-transport-security", "discovery-config", "socket-options"}

// fromFile loads cfg from an etcd-style YAML configuration file. As in etcd, keys the file format
// does not know are ignored, and duration-typed keys take integer nanoseconds (Ordo also accepts
// Go duration strings such as "10m" there).
func (l *loader) fromFile(cfg *Config, tbl *flagTable, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(b, &top); err != nil {
		return fmt.Errorf("parsing config file %s: %w", path, err)
	}
	flat := map[string]any{}
	for k, v := range top {
		if err := flattenKey(k, v, flat); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
	}
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := tbl.lookupYAML(k)
		v := flat[k]
		if s == nil || v == nil {
			continue
		}
		text, err := yamlText(s, v)
		if err != nil {
			return fmt.Errorf("config file %s: invalid value for %q: %w", path, k, err)
		}
		if s.name == "initial-cluster-state" && text == "" {
			text = ClusterStateNew // etcd's file loader defaults an empty state to "new"
		}
		if err := s.bind.set(text); err != nil {
			return fmt.Errorf("config file %s: invalid value for %q: %w", path, k, err)
		}
		cfg.ExplicitlySet[s.name] = true
	}
	return nil
}

// flattenKey turns nested sections into dotted keys ("client-transport-security.cert-file").
func flattenKey(key string, v any, out map[string]any) error {
	nested := false
	for _, sec := range nestedSections {
		if strings.EqualFold(key, sec) || strings.HasPrefix(strings.ToLower(key), sec+".") {
			nested = true
		}
	}
	if !nested || v == nil {
		out[key] = v
		return nil
	}
	m, ok := v.(map[any]any)
	if !ok {
		return fmt.Errorf("invalid %s: expected a map", key)
	}
	for k, sub := range m {
		ks, ok := k.(string)
		if !ok {
			return fmt.Errorf("invalid %s: non-string key %v", key, k)
		}
		if _, isMap := sub.(map[any]any); isMap {
			if err := flattenKey(key+"."+ks, sub, out); err != nil {
				return err
			}
			continue
		}
		out[key+"."+ks] = sub
	}
	return nil
}

// lookupYAML finds the flag of a file key: an exact match first, then a case-insensitive one
// (etcd's file loader goes through encoding/json, which matches keys that way).
func (t *flagTable) lookupYAML(key string) *flagSpec {
	if s, ok := t.byYAML[key]; ok {
		return s
	}
	for k, s := range t.byYAML {
		if strings.EqualFold(k, key) {
			return s
		}
	}
	return nil
}

// yamlText converts a decoded YAML value to the textual form the flag's binder parses.
func yamlText(s *flagSpec, v any) (string, error) {
	_, isDuration := s.bind.(durationVal)
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int:
		return intText(int64(x), isDuration), nil
	case int64:
		return intText(x, isDuration), nil
	case uint64:
		if isDuration && x > math.MaxInt64 {
			return "", fmt.Errorf("duration %d out of range", x)
		}
		if isDuration {
			return time.Duration(int64(x)).String(), nil
		}
		return strconv.FormatUint(x, 10), nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			return intText(int64(x), isDuration), nil
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		switch s.bind.(type) {
		case stringsVal, urlsVal:
		default:
			return "", fmt.Errorf("expected a single value, got a list")
		}
		parts := make([]string, 0, len(x))
		for _, e := range x {
			switch e.(type) {
			case map[any]any, []any:
				return "", fmt.Errorf("list elements must be plain values")
			}
			parts = append(parts, fmt.Sprint(e))
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("unexpected value of type %T", v)
	}
}

// intText formats an integer; for duration keys it is a number of nanoseconds, as in etcd's file.
func intText(n int64, isDuration bool) string {
	if isDuration {
		return time.Duration(n).String()
	}
	return strconv.FormatInt(n, 10)
}
