package unix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strings"

	"github.com/nhid/nhid/pkg/telemetry"
)

// deletedSuffix is what the kernel appends to /proc/<pid>/exe's target once
// the executable has been unlinked (or replaced by a rename).
const deletedSuffix = " (deleted)"

// errNoName reports an id without a name in the user or group database.
var errNoName = errors.New("no name for id")

// addExecutable adds the path and sha256 selectors. Opening
// /proc/<pid>/exe yields the very file the process runs, even after it was
// replaced on disk or when it lives in another mount namespace, so that is
// what gets hashed; the path is only where it was started from.
func (a *Attestor) addExecutable(ctx context.Context, b *builder, pid int32) error {
	exe := a.procPath(pid, "exe")
	target, err := os.Readlink(exe)
	if err != nil {
		// Kernel threads and exited processes have no executable.
		b.log.Debug("no executable to attest", telemetry.Error, err)
		return nil
	}
	f, err := os.Open(exe)
	if err != nil {
		b.log.Warn("cannot open executable; no sha256 selector", telemetry.Path, target, telemetry.Error, err)
		b.add("path", executablePath(target, nil))
		return nil
	}
	defer f.Close()
	b.add("path", executablePath(target, f))

	sum, err := a.executableHash(ctx, b.log, f, target)
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
// binary it named "P (deleted)".
func executablePath(target string, running *os.File) string {
	path, deleted := strings.CutSuffix(target, deletedSuffix)
	if !deleted {
		return target
	}
	if running != nil {
		named, err1 := os.Stat(target)
		run, err2 := running.Stat()
		if err1 == nil && err2 == nil && os.SameFile(named, run) {
			return target
		}
	}
	return path
}

// executableHash returns the hex SHA-256 of the open executable, or "" when
// it is too large or cannot be read. Only a cancelled context is an error:
// the caller is gone and a partial answer is useless.
func (a *Attestor) executableHash(ctx context.Context, log *slog.Logger, f *os.File, path string) (string, error) {
	k, err := keyOf(f)
	if err != nil {
		log.Warn("cannot stat executable; no sha256 selector", telemetry.Path, path, telemetry.Error, err)
		return "", nil
	}
	if k.size > a.maxHashSize {
		// Log each too-large binary once, not on every attestation.
		if _, seen := a.oversize.get(k); !seen {
			a.oversize.add(k, "")
			log.Warn("executable larger than the hash limit; no sha256 selector",
				telemetry.Path, path, "size", k.size, "max_hash_size", a.maxHashSize)
		}
		return "", nil
	}
	sum, err := a.sha256Of(ctx, f, k)
	switch {
	case err == nil:
		return sum, nil
	case ctx.Err() != nil:
		return "", fmt.Errorf("hash executable %s: %w", path, err)
	default:
		log.Warn("cannot hash executable; no sha256 selector", telemetry.Path, path, telemetry.Error, err)
		return "", nil
	}
}

func lookupUserName(uid string) (string, error) {
	u, err := user.LookupId(uid)
	if errors.As(err, new(user.UnknownUserIdError)) {
		return "", errNoName
	}
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func lookupGroupName(gid string) (string, error) {
	g, err := user.LookupGroupId(gid)
	if errors.As(err, new(user.UnknownGroupIdError)) {
		return "", errNoName
	}
	if err != nil {
		return "", err
	}
	return g.Name, nil
}
