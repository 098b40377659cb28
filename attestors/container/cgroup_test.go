package container

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	idA = "3f7c2a9d8e4b1c6f0a5d2e8b7c4f1a9e6d3b0c7f4a1e8d5b2c9f6a3e0d7b4c1f"
	idB = "9b1e4d7a0c3f6b9e2d5a8c1f4b7e0d3a6c9f2b5e8d1a4c7f0b3e6d9a2c5f8b1e"
	pod = "pod7a8d5c1e-1b2f-4c3d-9e8f-0a1b2c3d4e5f"
)

func v1Lines(path string) string {
	var b strings.Builder
	for i, c := range []string{"name=systemd", "pids", "blkio", "freezer", "devices", "memory", "cpuset", "cpu,cpuacct", "net_cls,net_prio"} {
		b.WriteString(strings.Join([]string{strconv.Itoa(12 - i), c, path}, ":") + "\n")
	}
	return b.String()
}

func noMountinfo() ([]byte, error) { return nil, errors.New("mountinfo must not be read") }

func TestContainerID_FromCgroupFile(t *testing.T) {
	tests := []struct {
		name   string
		cgroup string
		want   string
	}{
		{"docker cgroupfs v1", v1Lines("/docker/" + idA), idA},
		{"docker systemd v2", "0::/system.slice/docker-" + idA + ".scope\n", idA},
		{"docker systemd v1 with a misc line", v1Lines("/system.slice/docker-"+idA+".scope") + "13:misc:/\n", idA},
		{"containerd CRI cgroupfs v1", v1Lines("/kubepods/burstable/" + pod + "/" + idA), idA},
		{"containerd CRI systemd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a8d5c1e_1b2f_4c3d_9e8f_0a1b2c3d4e5f.slice/cri-containerd-" + idA + ".scope\n", idA},
		{"containerd CRI seen from a cgroup namespace", "0::/../../kubepods-besteffort-pod7a8d5c1e_1b2f.slice/cri-containerd-" + idA + ".scope\n", idA},
		{"containerd Go client cgroupfs", v1Lines("/default/"+idA) + "0::/default/" + idA + "\n", idA},
		{"nerdctl systemd v2", "0::/system.slice/nerdctl-" + idA + ".scope\n", idA},
		{"CRI-O systemd v2", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1c2d.slice/crio-" + idA + ".scope\n", idA},
		{"CRI-O cgroupfs v1", v1Lines("/kubepods/besteffort/" + pod + "/crio-" + idA), idA},
		{"podman with a nested container cgroup", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + idA + ".scope/container\n", idA},
		{"kind node: the innermost container wins", "0::/docker/" + idB + "/kubepods/besteffort/" + pod + "/" + idA + "\n", idA},
		{"systemd inside a docker container", "0::/system.slice/docker-" + idA + ".scope/init.scope\n", idA},
		{"host login session", "0::/user.slice/user-1000.slice/session-3.scope\n", ""},
		{"host service", v1Lines("/system.slice/nhid-agent.service") + "0::/system.slice/nhid-agent.service\n", ""},
		{"root cgroup", "0::/\n", ""},
		{"CRI-O conmon is on the host", "0::/kubepods.slice/kubepods-besteffort.slice/crio-conmon-" + idA + ".scope\n", ""},
		{"a pod cgroup is not a container", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a8d5c1e_1b2f_4c3d_9e8f_0a1b2c3d4e5f.slice\n", ""},
		{"uppercase hex is no runtime's ID", "0::/docker/" + strings.ToUpper(idA) + "\n", ""},
		{"63 hex characters", "0::/docker/" + idA[1:] + "\n", ""},
		{"an ID with a suffix", "0::/docker/" + idA + "-extra\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := containerID([]byte(tt.cgroup), func() ([]byte, error) { return []byte(hostMountinfo), nil })
			if err != nil {
				t.Fatalf("containerID: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("container ID (-want +got):\n%s", diff)
			}
		})
	}
}

func TestContainerID_CgroupFileWithIDDoesNotReadMountinfo(t *testing.T) {
	got, err := containerID([]byte("0::/docker/"+idA+"\n"), noMountinfo)
	if err != nil || got != idA {
		t.Fatalf("containerID = %q, %v; want %q, nil", got, err, idA)
	}
}

// hostMountinfo is a host process's mountinfo: its cgroup mounts are the
// hierarchy roots.
const hostMountinfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
`

func TestContainerID_FromMountinfoWhenCgroupFileHidesIt(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		want      string
	}{
		{"docker v1 cgroup mounts", `1180 1179 0:72 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/f00/diff,workdir=/var/lib/docker/overlay2/f00/work
1185 1184 0:33 /docker/` + idA + ` /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory
1186 1184 0:34 /docker/` + idA + ` /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,cpu,cpuacct
1190 1179 0:77 /var/lib/docker/containers/` + idB + `/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
`, idA},
		{"containerd CRI v2 cgroup mount", `2200 2100 0:310 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/41/fs,upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/42/fs
2207 2205 0:30 /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1c2d.slice/cri-containerd-` + idA + `.scope /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
2210 2200 254:1 /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/` + idB + `/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw
`, idA},
		{"CRI-O v2 cgroup mount with an escaped space", `3300 3200 0:30 /kubepods.slice/my\040slice/crio-` + idA + `.scope /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw
3301 3200 254:1 /var/lib/containers/storage/overlay-containers/` + idB + `/userdata/hostname /etc/hostname rw - ext4 /dev/vda1 rw
`, idA},
		{"bind mounts that name another container are ignored", `1190 1179 0:77 /var/lib/docker/containers/` + idB + `/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw
`, ""},
		{"host", hostMountinfo, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := containerID([]byte("0::/\n"), func() ([]byte, error) { return []byte(tt.mountinfo), nil })
			if err != nil {
				t.Fatalf("containerID: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("container ID (-want +got):\n%s", diff)
			}
		})
	}
}

func TestContainerID_RejectsAmbiguousAndMalformedInput(t *testing.T) {
	tests := []struct {
		name      string
		cgroup    string
		mountinfo string
		wantErr   error
	}{
		{"two containers in v1 hierarchies", "4:memory:/docker/" + idA + "\n3:cpu:/docker/" + idB + "\n", "", errAmbiguous},
		{"two containers in cgroup mounts", "0::/\n",
			"1 0 0:1 /docker/" + idA + " /sys/fs/cgroup/memory ro - cgroup cgroup rw\n2 0 0:2 /docker/" + idB + " /sys/fs/cgroup/cpu ro - cgroup cgroup rw\n", errAmbiguous},
		{"cgroup line without path", "0:memory\n", "", nil},
		{"mountinfo line without separator", "0::/\n", "1 0 0:1 / /sys ro\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mi := tt.mountinfo
			_, err := containerID([]byte(tt.cgroup), func() ([]byte, error) { return []byte(mi), nil })
			if err == nil {
				t.Fatal("containerID succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	tests := map[string]string{
		`/a\040b`:    "/a b",
		`/tab\011x`:  "/tab\tx",
		`/plain`:     "/plain",
		`/trail\04`:  `/trail\04`,
		`/not\999ok`: `/not\999ok`,
	}
	for in, want := range tests {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
