package unix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/nhid/nhid/pkg/telemetry"
	"golang.org/x/sys/unix"
)

// deletedSuffix is what the kernel appends to /proc/<pid>/exe's target once
// the executable has been unlinked (or replaced by a rename).
const deletedSuffix = " (deleted)"

// addExecutable adds the path and sha256 selectors. /proc/<pid>/exe
// resolves to the very file the process runs, even after it was replaced
// on disk or when it lives in another mount namespace, so that is what is
// identified and hashed; the path is only where it was started from.
//
// An attestation whose hash is cached costs two system calls here
// (readlink and stat); the file is opened only to be hashed.
func (a *Attestor) addExecutable(ctx context.Context, b *builder, pid int32) error {
	exe := a.procPath(pid, "exe")
	target, err := readlink(exe)
	if err != nil {
		// Kernel threads and exited processes have no executable.
		b.log().Debug("no executable to attest", telemetry.Error, err)
		return nil
	}
	var st unix.Stat_t
	if err := stat(exe, &st); err != nil {
		b.log().Warn("cannot stat executable; no sha256 selector", telemetry.Path, target, telemetry.Error, err)
		b.add("path", executablePath(target, nil))
		return nil
	}
	b.add("path", executablePath(target, &st))

	sum, err := a.executableHash(ctx, b.log, exe, keyOf(&st), target)
	if err != nil {
		return fmt.Errorf("unix attestor: pid %d: %w", pid, err)
	}
	if sum != "" {
		b.add("sha256", sum)
	}
	return nil
}

// executablePath strips the kernel's " (deleted)" marker, unless the file
// really is named that way: a workload must not claim path P by running a
// binary it named "P (deleted)". running is the stat of the file the
// process runs, nil if unknown.
func executablePath(target string, running *unix.Stat_t) string {
	path, deleted := strings.CutSuffix(target, deletedSuffix)
	if !deleted {
		return target
	}
	if running != nil {
		var named unix.Stat_t
		if err := unix.Stat(target, &named); err == nil && named.Dev == running.Dev && named.Ino == running.Ino {
			return target
		}
	}
	return path
}

// executableHash returns the hex SHA-256 of the executable exe resolves
// to, whose identity was k when stat'ed, or "" when it is too large or
// cannot be read. Only a cancelled context is an error: the caller is gone
// and a partial answer is useless.
func (a *Attestor) executableHash(ctx context.Context, log func() *slog.Logger, exe string, k fileKey, path string) (string, error) {
	if a.oversized(log, k, path) {
		return "", nil
	}
	if sum, ok := a.cache.get(k); ok {
		return sum, nil
	}
	// Not cached: hash the file opened, under the key of what was opened,
	// which differs from k only if the binary changed meanwhile.
	f, err := os.Open(exe)
	if err != nil {
		log().Warn("cannot open executable; no sha256 selector", telemetry.Path, path, telemetry.Error, err)
		return "", nil
	}
	defer f.Close()
	if k, err = fileKeyOf(f); err != nil {
		log().Warn("cannot stat executable; no sha256 selector", telemetry.Path, path, telemetry.Error, err)
		return "", nil
	}
	if a.oversized(log, k, path) {
		return "", nil
	}
	sum, err := a.sha256Of(ctx, f, k)
	switch {
	case err == nil:
		return sum, nil
	case ctx.Err() != nil:
		return "", fmt.Errorf("hash executable %s: %w", path, err)
	default:
		log().Warn("cannot hash executable; no sha256 selector", telemetry.Path, path, telemetry.Error, err)
		return "", nil
	}
}

// oversized reports whether the file k is too large to hash, logging each
// such file once rather than on every attestation.
func (a *Attestor) oversized(log func() *slog.Logger, k fileKey, path string) bool {
	if k.size <= a.maxHashSize {
		return false
	}
	if _, seen := a.oversize.get(k); !seen {
		a.oversize.add(k, "")
		log().Warn("executable larger than the hash limit; no sha256 selector",
			telemetry.Path, path, "size", k.size, "max_hash_size", a.maxHashSize)
	}
	return true
}

// stat is stat(2), following links, retried on EINTR.
func stat(path string, st *unix.Stat_t) error {
	for {
		err := unix.Stat(path, st)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "stat", Path: path, Err: err}
		}
		return nil
	}
}

// readlink returns the target of the symbolic link at path. It starts
// with a small buffer on the stack, enough for most executables' paths: a
// PATH_MAX one would make the goroutine's stack grow, a copy that costs
// more than the system call.
func readlink(path string) (string, error) {
	var small [256]byte
	buf := small[:]
	for {
		n, err := unix.Readlink(path, buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return "", &fs.PathError{Op: "readlink", Path: path, Err: err}
		case n < len(buf):
			return string(buf[:n]), nil
		case len(buf) >= unix.PathMax:
			return "", &fs.PathError{Op: "readlink", Path: path, Err: unix.ENAMETOOLONG}
		}
		buf = make([]byte, 2*len(buf)) // possibly truncated: again, larger
	}
}
