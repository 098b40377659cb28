package unix

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// parseStatus reads the Uid:, Gid: and Groups: lines of a status file. The
// Uid and Gid lines hold real, effective, saved and filesystem ids; the
// effective one decides what the process may do, so that is what counts.
func parseStatus(data []byte) (procStatus, error) {
	var (
		st                           procStatus
		haveUID, haveGID, haveGroups bool
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxStatusLine)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var err error
		switch key {
		case "Uid":
			st.uid, err = effectiveID(key, rest)
			haveUID = true
		case "Gid":
			st.gid, err = effectiveID(key, rest)
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
	case sc.Err() != nil:
		return procStatus{}, fmt.Errorf("scan status: %w", sc.Err())
	case !haveUID:
		return procStatus{}, errors.New("status: no Uid line")
	case !haveGID:
		return procStatus{}, errors.New("status: no Gid line")
	case !haveGroups:
		return procStatus{}, errors.New("status: no Groups line")
	}
	return st, nil
}

func effectiveID(key, rest string) (uint32, error) {
	f := strings.Fields(rest)
	if len(f) != 4 {
		return 0, fmt.Errorf("status %s: want 4 ids, got %d", key, len(f))
	}
	id, err := parseID(f[1])
	if err != nil {
		return 0, fmt.Errorf("status %s: effective id: %w", key, err)
	}
	return id, nil
}

func parseGroups(rest string) ([]uint32, error) {
	f := strings.Fields(rest)
	if len(f) > maxGroups {
		return nil, fmt.Errorf("status Groups: %d groups, more than %d", len(f), maxGroups)
	}
	groups := make([]uint32, 0, len(f))
	for i, s := range f {
		id, err := parseID(s)
		if err != nil {
			return nil, fmt.Errorf("status Groups[%d]: %w", i, err)
		}
		groups = append(groups, id)
	}
	return groups, nil
}

func parseID(s string) (uint32, error) {
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(id), nil
}
