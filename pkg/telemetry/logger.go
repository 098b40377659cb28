package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogLevels and LogFormats are the values NewLogger accepts, in the order
// error messages list them.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"text", "json"}
)

// ParseLogLevel maps a level name to its slog level; "" means info.
func ParseLogLevel(level string) (slog.Level, error) {
	switch strings.ToLower(level) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q is not one of %s", level, strings.Join(LogLevels, ", "))
}

// NewLogger builds the process logger writing to w at level ("debug",
// "info", "warn", "error"; "" is info) in format ("text" or "json"; "" is
// text).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := ParseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q is not one of %s", format, strings.Join(LogFormats, ", "))
}

// DiscardLogger is a logger that drops everything, for components whose
// Config left Log nil.
func DiscardLogger() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// OrDiscard returns log, or a logger that drops everything when log is nil.
func OrDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return DiscardLogger()
	}
	return log
}

type loggerKey struct{}

// ContextWithLogger returns ctx carrying log, the per-request logger that
// handlers further down use through Logger.
func ContextWithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// Logger returns the per-request logger stored in ctx, or fallback.
func Logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if log, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && log != nil {
		return log
	}
	return OrDiscard(fallback)
}
