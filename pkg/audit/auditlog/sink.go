package auditlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SinkStdout is the sink setting that streams JSON lines to standard output.
const SinkStdout = "stdout"

// OpenSink opens the sink a setting names: SinkStdout, or an absolute path
// of a file the lines are appended to (created 0600). Close does not close
// standard output.
func OpenSink(spec string) (io.WriteCloser, error) {
	switch {
	case spec == SinkStdout:
		return nopCloser{os.Stdout}, nil
	case spec == "":
		return nil, errors.New("audit sink: empty: want stdout or an absolute file path")
	case !filepath.IsAbs(spec):
		return nil, fmt.Errorf("audit sink %q: want stdout or an absolute file path", spec)
	}
	f, err := os.OpenFile(spec, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit sink: %w", err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
