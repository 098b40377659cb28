package unix

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadlink_LongTargets(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{1, 255, 256, 257, 1000, 3000} {
		target := "/" + strings.Repeat("x", n-1)
		link := filepath.Join(dir, "link"+formatID(uint32(n)))
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		got, err := readlink(link)
		if err != nil || got != target {
			t.Errorf("readlink of a %d-byte target = %d bytes, %v; want it whole", n, len(got), err)
		}
	}
}
