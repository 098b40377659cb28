package container

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// maxProcFileSize bounds how much of /proc/<pid>/cgroup or mountinfo is
// read: a node with thousands of mounts stays far below it, and a process
// cannot make the agent read without end.
const maxProcFileSize = 8 << 20

// errAmbiguous marks a process whose cgroups name more than one container.
var errAmbiguous = errors.New("cgroups name more than one container")

// idLen is the length of the container IDs every runtime nhid reads
// generates: 32 random bytes in lowercase hex (containerd's CRI plugin,
// CRI-O, Docker, Podman and nerdctl alike).
const idLen = 64

// runtimePrefixes are the cgroup name prefixes runtimes put before a
// container ID when systemd manages cgroups ("cri-containerd-<id>.scope")
// or CRI-O's cgroupfs manager does ("crio-<id>").
var runtimePrefixes = []string{"cri-containerd-", "crio-", "docker-", "libpod-", "nerdctl-", "containerd-"}

// notContainerPrefixes name cgroups that carry a container ID but hold a
// process outside the container: CRI-O's conmon monitor runs on the host.
var notContainerPrefixes = []string{"crio-conmon-", "libpod-conmon-"}

// idFromCgroupPath returns the container ID in a cgroup path, taking the
// deepest segment that is one, so a container nested in another (a kind
// node's pods, systemd inside a container) is named by the innermost.
func idFromCgroupPath(p string) (string, bool) {
	segs := strings.Split(p, "/")
	for i := len(segs) - 1; i >= 0; i-- {
		if id, ok := idFromSegment(segs[i]); ok {
			return id, true
		}
	}
	return "", false
}

// idFromSegment recognises one cgroup path segment that names a
// container: "<id>", "<prefix><id>" or "<prefix><id>.scope".
func idFromSegment(seg string) (string, bool) {
	for _, p := range notContainerPrefixes {
		if strings.HasPrefix(seg, p) {
			return "", false
		}
	}
	s := strings.TrimSuffix(seg, ".scope")
	for _, p := range runtimePrefixes {
		if strings.HasPrefix(s, p) {
			s = s[len(p):]
			break
		}
	}
	if !isID(s) {
		return "", false
	}
	return s, true
}

func isID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// cgroupPaths returns the paths of /proc/<pid>/cgroup's lines
// ("hierarchy-id:controllers:path", cgroup v1 and v2 alike).
func cgroupPaths(data []byte) ([]string, error) {
	var paths []string
	err := eachLine(data, func(line string) error {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return fmt.Errorf("cgroup line %q: want hierarchy-id:controllers:path", line)
		}
		paths = append(paths, parts[2])
		return nil
	})
	return paths, err
}

// mountinfoCgroupRoots returns the roots of the cgroup and cgroup2 mounts
// in a mountinfo file: a container's cgroup filesystem is mounted from its
// own cgroup, so the root names it even where /proc/<pid>/cgroup is
// relative to a cgroup namespace that hides it.
func mountinfoCgroupRoots(data []byte) ([]string, error) {
	var roots []string
	err := eachLine(data, func(line string) error {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 6 {
			return fmt.Errorf("mountinfo line %q: malformed", line)
		}
		fstype, _, _ := strings.Cut(post, " ")
		if fstype == "cgroup" || fstype == "cgroup2" {
			roots = append(roots, unescapeMountinfo(fields[3]))
		}
		return nil
	})
	return roots, err
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

func eachLine(data []byte, fn func(string) error) error {
	for line := range bytes.Lines(data) {
		l := strings.TrimSpace(string(line))
		if l == "" {
			continue
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	return nil
}

// uniqueID returns the one container ID the paths name, "" when none does,
// and errAmbiguous when they disagree.
func uniqueID(paths []string) (string, error) {
	found := ""
	for _, p := range paths {
		id, ok := idFromCgroupPath(path.Clean("/" + p))
		if !ok {
			continue
		}
		if found != "" && id != found {
			return "", fmt.Errorf("%w: %s and %s", errAmbiguous, found, id)
		}
		found = id
	}
	return found, nil
}

// containerID finds the container ID of a process from the contents of its
// cgroup file and, only when that names none, the cgroup mounts' roots in
// its mountinfo file (read by mountinfo). "" means the process is not in a
// container.
func containerID(cgroup []byte, mountinfo func() ([]byte, error)) (string, error) {
	paths, err := cgroupPaths(cgroup)
	if err != nil {
		return "", err
	}
	id, err := uniqueID(paths)
	if err != nil || id != "" {
		return id, err
	}
	data, err := mountinfo()
	if err != nil {
		return "", err
	}
	roots, err := mountinfoCgroupRoots(data)
	if err != nil {
		return "", err
	}
	return uniqueID(roots)
}

// readProcFile reads a /proc file up to maxProcFileSize.
func readProcFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxProcFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxProcFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxProcFileSize)
	}
	return data, nil
}
