package container

import (
	"fmt"
	"path/filepath"
	"strconv"
)

// IDFromPID returns the ID of the container process pid runs in, read from
// procfs mounted at procRoot: its cgroup file and, when that names none,
// the roots of its cgroup mounts. "" means the process is in no container.
// Other attestors that describe a caller's container (the k8s attestor)
// use it, so they all agree on which container a process is in.
func IDFromPID(procRoot string, pid int32) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("pid %d: must be positive", pid)
	}
	dir := filepath.Join(procRoot, strconv.Itoa(int(pid)))
	cgroup, err := readProcFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", pid, err)
	}
	mountinfo := func() ([]byte, error) { return readProcFile(filepath.Join(dir, "mountinfo")) }
	id, err := containerID(cgroup, mountinfo)
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", pid, err)
	}
	return id, nil
}
