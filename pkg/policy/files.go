package policy

import (
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Load reads the policy at path and compiles it. path is a policy file, or
// a directory whose *.yaml files (not hidden ones, not subdirectories) make
// up the policy; errors name files by their path under path.
func Load(path string) (*Set, error) {
	files, err := readFiles(path)
	if err != nil {
		return nil, err
	}
	return Compile(files)
}

// readFiles reads the policy files at path, keyed by their paths.
func readFiles(path string) (map[string][]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if !info.IsDir() {
		data, err := readFile(path)
		if err != nil {
			return nil, err
		}
		return map[string][]byte{path: data}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		p := filepath.Join(path, name)
		// Stat follows symlinks, as Kubernetes ConfigMap volumes need. A
		// link that leads nowhere is an error, not a file to skip: skipping
		// it would silently drop its rules.
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
		if st.IsDir() {
			continue
		}
		data, err := readFile(p)
		if err != nil {
			return nil, err
		}
		files[p] = data
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("read policy: no *.yaml files in directory %s", path)
	}
	return files, nil
}

// readFile reads one policy file, refusing one larger than maxFileSize
// without reading all of it.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("read policy %s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// fingerprint identifies the content of a set of policy files, so the
// watcher reloads only when something changed. It hashes content, not
// modification times, which miss edits within the same second and atomic
// symlink swaps that keep the old times.
func fingerprint(files map[string][]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(files[name]))
		h.Write(files[name])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
