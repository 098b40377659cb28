// Package unix is the unix workload attestor: it describes a local process
// by its effective user and groups and by the executable it runs, including
// the SHA-256 of that executable's content.
//
// Selectors (type "unix"):
//
//	uid:<n>  gid:<n>  user:<name>  group:<name>  supplementary_gid:<n>
//	path:<executable path>  sha256:<hex>
//
// The caller pins the process before and checks it is alive after Attest
// (pkg/peercred), so reading /proc/<pid> here cannot be fooled by PID reuse.
package unix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
	"golang.org/x/sync/singleflight"
)

// Type is the selector type this attestor produces.
const Type = "unix"

// DefaultMaxHashSize is the largest executable hashed when Config leaves
// MaxHashSize zero.
const DefaultMaxHashSize int64 = 256 << 20

// defaultCacheSize is how many executables' hashes are remembered.
const defaultCacheSize = 1024

// Config configures the unix attestor.
type Config struct {
	// Log receives attestation problems that do not fail the attestation.
	// Defaults to slog.Default().
	Log *slog.Logger
	// MaxHashSize is the largest executable, in bytes, to hash; a larger one
	// gets no sha256 selector. Zero means DefaultMaxHashSize.
	MaxHashSize int64
	// ProcRoot is where procfs is mounted. Zero means /proc.
	ProcRoot string
}

// Attestor is the unix workload attestor. It is safe for concurrent use.
type Attestor struct {
	log         *slog.Logger
	maxHashSize int64
	procRoot    string
	cache       *hashCache
	flights     singleflight.Group
	oversize    *hashCache // executables already logged as too big to hash

	// hash computes a hex SHA-256; a test seam to count and stall hashing.
	hash func(ctx context.Context, r io.Reader) (string, error)
	// lookupUser and lookupGroup resolve names, through a nameCache over
	// os/user; test seams.
	lookupUser  func(uid string) (string, error)
	lookupGroup func(gid string) (string, error)
}

// New returns a unix attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.MaxHashSize < 0 {
		return nil, fmt.Errorf("unix attestor: MaxHashSize: must not be negative, got %d", cfg.MaxHashSize)
	}
	if cfg.MaxHashSize == 0 {
		cfg.MaxHashSize = DefaultMaxHashSize
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if !filepath.IsAbs(cfg.ProcRoot) {
		return nil, fmt.Errorf("unix attestor: ProcRoot: must be an absolute path, got %q", cfg.ProcRoot)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Attestor{
		log:         cfg.Log.With(telemetry.Attestor, Type),
		maxHashSize: cfg.MaxHashSize,
		procRoot:    filepath.Clean(cfg.ProcRoot),
		cache:       newHashCache(defaultCacheSize),
		oversize:    newHashCache(defaultCacheSize),
		hash:        sha256Stream,
		lookupUser:  newNameCache(passwdFile, lookupUserName).get,
		lookupGroup: newNameCache(groupFile, lookupGroupName).get,
	}, nil
}

// Type returns "unix".
func (a *Attestor) Type() string { return Type }

// Attest returns the selectors of process pid. A process that does not exist
// is an error; parts that cannot be determined for a live process (a name
// with no passwd entry, a kernel thread's missing executable) are left out.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("unix attestor: pid %d: must be positive", pid)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := a.readStatus(pid)
	if err != nil {
		return nil, err
	}
	b := &builder{base: a.log, pid: pid}
	a.addIdentity(b, st)
	if err := a.addExecutable(ctx, b, pid); err != nil {
		return nil, err
	}
	return b.sels, nil
}

func (a *Attestor) procPath(pid int32, name string) string {
	return filepath.Join(a.procRoot, strconv.Itoa(int(pid)), name)
}

// readStatus reads /proc/<pid>/status with plain system calls into a
// pooled buffer: os.ReadFile would stat the file (procfs reports size 0),
// grow its buffer from 512 bytes and allocate an os.File, for what one
// read(2) returns.
func (a *Attestor) readStatus(pid int32) (procStatus, error) {
	bp := statusBufs.Get().(*[]byte)
	defer statusBufs.Put(bp) // parseStatus keeps nothing that points into it
	data, err := readSmallFile(a.procPath(pid, "status"), *bp, maxStatusSize)
	if err != nil {
		return procStatus{}, fmt.Errorf("unix attestor: read status of pid %d: %w", pid, err)
	}
	st, err := parseStatus(data)
	if err != nil {
		return procStatus{}, fmt.Errorf("unix attestor: pid %d: %w", pid, err)
	}
	return st, nil
}

// builder collects selectors for one attestation.
type builder struct {
	base *slog.Logger
	pid  int32
	with *slog.Logger // base with the pid, made on first use
	sels []selector.Selector
}

// log is the attestation's logger. It is made only when something is
// logged, which a normal attestation never does: slog's With formats its
// attributes at once.
func (b *builder) log() *slog.Logger {
	if b.with == nil {
		b.with = b.base.With(telemetry.PID, b.pid)
	}
	return b.with
}

// add appends a selector. A value that cannot form one (a path with a
// newline, say) is left out rather than failing the attestation: the
// selectors that remain are still true, and an entry that needs the missing
// one simply does not match.
func (b *builder) add(kind, value string) {
	s, err := selector.New(Type, kind+":"+value)
	if err != nil {
		b.log().Warn("leaving out unrepresentable selector", "kind", kind, telemetry.Error, err)
		return
	}
	b.sels = append(b.sels, s)
}

func (a *Attestor) addIdentity(b *builder, st procStatus) {
	uid := formatID(st.uid)
	gid := formatID(st.gid)
	b.add("uid", uid)
	b.add("gid", gid)
	if name, ok := a.resolve(a.lookupUser, "user", uid); ok {
		b.add("user", name)
	}
	if name, ok := a.resolve(a.lookupGroup, "group", gid); ok {
		b.add("group", name)
	}
	for _, g := range st.groups {
		b.add("supplementary_gid", formatID(g))
	}
}

// resolve looks a name up; an id with no name is normal and not logged.
func (a *Attestor) resolve(lookup func(string) (string, error), kind, id string) (string, bool) {
	name, err := lookup(id)
	switch {
	case errors.Is(err, errNoName):
		return "", false
	case err != nil:
		a.log.Warn("cannot resolve name", "kind", kind, "id", id, telemetry.Error, err)
		return "", false
	case name == "":
		return "", false
	}
	return name, true
}
