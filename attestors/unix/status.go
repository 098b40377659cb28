package unix

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// procStatus is what the attestor needs from /proc/<pid>/status.
type procStatus struct {
	uid    uint32   // effective uid
	gid    uint32   // effective gid
	groups []uint32 // supplementary gids, in the kernel's order
}

// maxGroups bounds the Groups: line (NGROUPS_MAX is 65536), so a corrupt or
// hostile status file cannot make us allocate without limit.
const maxGroups = 65536

// maxStatusLine fits a Groups: line with maxGroups ten-digit ids.
const maxStatusLine = 16 + maxGroups*11

// maxStatusSize bounds the whole status file: its other lines are short.
const maxStatusSize = maxStatusLine + 64<<10

// statusBufSize holds a typical status file (about 1.5 KiB) in one read.
const statusBufSize = 4 << 10

// statusBufs recycles read buffers: a status file is read on every
// attestation and parsed at once, so nothing needs to keep it.
var statusBufs = sync.Pool{New: func() any { b := make([]byte, statusBufSize); return &b }}

// readSmallFile reads the whole file at path into buf, or into a larger
// buffer of at most limit bytes if buf is too small; a longer file is an
// error.
func readSmallFile(path string, buf []byte, limit int) ([]byte, error) {
	fd, err := openReadOnly(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(buf) {
			if n >= limit {
				return nil, fmt.Errorf("read %s: longer than %d bytes", path, limit)
			}
			bigger := make([]byte, min(max(2*n, statusBufSize), limit))
			buf = bigger[:copy(bigger, buf)]
			buf = buf[:cap(buf)]
		}
		m, err := unix.Read(fd, buf[n:])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return buf[:n], nil
		}
		n += m
	}
}

// openReadOnly opens path for reading, close-on-exec.
func openReadOnly(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// parseStatus reads the Uid:, Gid: and Groups: lines of a status file. The
// Uid and Gid lines hold real, effective, saved and filesystem ids; the
// effective one decides what the process may do, so that is what counts.
func parseStatus(data []byte) (procStatus, error) {
	var (
		st                           procStatus
		haveUID, haveGID, haveGroups bool
	)
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) > maxStatusLine {
			return procStatus{}, fmt.Errorf("status: line of %d bytes, more than %d", len(line), maxStatusLine)
		}
		key, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		var err error
		switch string(key) { // no allocation: the compiler compares in place
		case "Uid":
			st.uid, err = effectiveID("Uid", rest)
			haveUID = true
		case "Gid":
			st.gid, err = effectiveID("Gid", rest)
			haveGID = true
		case "Groups":
			st.groups, err = parseGroups(rest)
			haveGroups = true
		}
		if err != nil {
			return procStatus{}, err
		}
	}
	switch {
	case !haveUID:
		return procStatus{}, errors.New("status: no Uid line")
	case !haveGID:
		return procStatus{}, errors.New("status: no Gid line")
	case !haveGroups:
		return procStatus{}, errors.New("status: no Groups line")
	}
	return st, nil
}

func effectiveID(key string, rest []byte) (uint32, error) {
	var f [4][]byte
	n := 0
	for field := range bytes.FieldsSeq(rest) {
		if n < len(f) {
			f[n] = field
		}
		n++
	}
	if n != len(f) {
		return 0, fmt.Errorf("status %s: want 4 ids, got %d", key, n)
	}
	id, err := parseID(f[1])
	if err != nil {
		return 0, fmt.Errorf("status %s: effective id: %w", key, err)
	}
	return id, nil
}

func parseGroups(rest []byte) ([]uint32, error) {
	n := 0
	for range bytes.FieldsSeq(rest) {
		n++
	}
	if n > maxGroups {
		return nil, fmt.Errorf("status Groups: %d groups, more than %d", n, maxGroups)
	}
	groups := make([]uint32, 0, n)
	for s := range bytes.FieldsSeq(rest) {
		id, err := parseID(s)
		if err != nil {
			return nil, fmt.Errorf("status Groups[%d]: %w", len(groups), err)
		}
		groups = append(groups, id)
	}
	return groups, nil
}

// parseID parses a decimal id that fits in 32 bits, digits only.
func parseID(s []byte) (uint32, error) {
	if len(s) == 0 || len(s) > 10 {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	var id uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a numeric id", s)
		}
		id = id*10 + uint64(c-'0')
	}
	if id > 1<<32-1 {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(id), nil
}

// formatID is the decimal form of an id, for selectors and name lookups.
func formatID(id uint32) string { return strconv.FormatUint(uint64(id), 10) }
