// Package config builds Ordo's server configuration from the same inputs etcd v3.7 reads:
// command-line flags, ETCD_* environment variables, or a YAML configuration file given with
// --config-file (in which case, as in etcd, flags and environment variables are ignored).
//
// Every etcd v3.7 server flag is accepted by name. The flag table in flags.go says, for each one,
// whether Ordo implements it, accepts it as a harmless no-op, or rejects a non-default value with
// an error naming the flag. Load parses and validates everything in one place.
package config
