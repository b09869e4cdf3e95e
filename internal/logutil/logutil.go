// Package logutil builds Ordo's zap loggers. The loggers write the same JSON shape as etcd's
// (keys "level", "ts", "caller", "msg"; lowercase levels; microsecond RFC 3339 timestamps), so
// tools that read etcd's logs can read Ordo's.
package logutil

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Names accepted in a list of log outputs, as etcd's --log-outputs accepts them. Anything else
// is a file path that logs are appended to.
const (
	// OutputDefault is etcd's "default" output, which is standard error.
	OutputDefault = "default"
	// OutputStderr writes to standard error.
	OutputStderr = "stderr"
	// OutputStdout writes to standard output.
	OutputStdout = "stdout"
	// OutputJournal is etcd's systemd journal output; Ordo does not support it.
	OutputJournal = "systemd/journal"
	// OutputDiscard discards every log entry when it appears among the outputs.
	OutputDiscard = "/dev/null"
)

// Log formats accepted by NewLoggerFormat.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
)

// TimeLayout is the timestamp layout of the "ts" field, the one etcd uses.
const TimeLayout = "2006-01-02T15:04:05.000000Z0700"

// EncoderConfig returns the encoder configuration of etcd's default zap logger.
func EncoderConfig() zapcore.EncoderConfig {
	return zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		CallerKey:      "caller",
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     encodeTime,
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeCaller:   zapcore.ShortCallerEncoder,
	}
}

func encodeTime(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(t.Format(TimeLayout))
}

// ParseLevel converts a level name (debug, info, warn, error, dpanic, panic, fatal) to a zap level.
func ParseLevel(level string) (zapcore.Level, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return l, fmt.Errorf("unrecognized log level %q (supported: debug, info, warn, error, panic, fatal)", level)
	}
	return l, nil
}

// CheckFormat reports whether format names a supported log encoding ("" means JSON).
func CheckFormat(format string) error {
	switch format {
	case "", FormatJSON, FormatConsole:
		return nil
	default:
		return fmt.Errorf("unknown log format: %s, supported values json, console", format)
	}
}

// CheckOutputs validates a list of log outputs with etcd's rules.
func CheckOutputs(outputs []string) error {
	if len(outputs) > 1 && slices.Contains(outputs, OutputDefault) {
		return fmt.Errorf("multi logoutput for %q is not supported yet", OutputDefault)
	}
	for _, o := range outputs {
		switch o {
		case "":
			return errors.New("empty log output")
		case OutputJournal:
			return fmt.Errorf("log output %q is not supported by Ordo; use %q, %q or a file path", OutputJournal, OutputStderr, OutputStdout)
		}
	}
	return nil
}

// NewLogger returns a JSON logger at the given level writing to outputs ("default" or "stderr" for
// standard error, "stdout", or file paths to append to). An empty outputs list means standard error.
func NewLogger(level string, outputs []string) (*zap.Logger, error) {
	return NewLoggerFormat(level, FormatJSON, outputs)
}

// NewLoggerFormat is NewLogger with a choice of encoding: "json" (etcd's default) or "console".
func NewLoggerFormat(level, format string, outputs []string) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if err := CheckFormat(format); err != nil {
		return nil, err
	}
	if format == "" {
		format = FormatJSON
	}
	if len(outputs) == 0 {
		outputs = []string{OutputDefault}
	}
	if err := CheckOutputs(outputs); err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(outputs))
	for _, o := range outputs {
		if o == OutputDefault {
			o = OutputStderr
		}
		paths = append(paths, o)
	}
	paths = mergePaths(paths)
	zc := zap.Config{
		Level:            zap.NewAtomicLevelAt(lvl),
		Sampling:         &zap.SamplingConfig{Initial: 100, Thereafter: 100},
		Encoding:         format,
		EncoderConfig:    EncoderConfig(),
		OutputPaths:      paths,
		ErrorOutputPaths: paths,
	}
	lg, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("building logger for outputs %q: %w", outputs, err)
	}
	return lg, nil
}

// mergePaths sorts and de-duplicates output paths; "/dev/null" anywhere discards everything.
func mergePaths(paths []string) []string {
	if slices.Contains(paths, OutputDiscard) {
		return []string{OutputDiscard}
	}
	out := slices.Clone(paths)
	slices.Sort(out)
	return slices.Compact(out)
}

// NewWriterLogger returns a JSON logger in etcd's format writing to w at the given level.
// An unknown level falls back to info.
func NewWriterLogger(w io.Writer, level string) *zap.Logger {
	lvl, err := ParseLevel(level)
	if err != nil {
		lvl = zapcore.InfoLevel
	}
	ws := zapcore.AddSync(w)
	core := zapcore.NewCore(zapcore.NewJSONEncoder(EncoderConfig()), ws, lvl)
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(ws))
}
