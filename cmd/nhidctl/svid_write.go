package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// writeSVIDs writes the first SVID as svid.pem and svid.key, any further
// ones as svid.N.pem and svid.N.key, and the first SVID's trust domain
// bundle as bundle.pem. Each file appears whole or not at all.
func writeSVIDs(log io.Writer, dir string, c *workloadapi.X509Context) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for i, s := range c.SVIDs {
		certs, key, err := s.Marshal()
		if err != nil {
			return fmt.Errorf("encode SVID %s: %w", s.ID, err)
		}
		name := "svid"
		if i > 0 {
			name = fmt.Sprintf("svid.%d", i)
		}
		if err := writeFileAtomic(filepath.Join(dir, name+".pem"), certs, 0o644); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, name+".key"), key, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(log, "wrote %s (%s) and its key\n", filepath.Join(dir, name+".pem"), s.ID)
	}
	b, ok := bundleFor(c, c.SVIDs[0])
	if !ok {
		return fmt.Errorf("no bundle for trust domain %s to write", c.SVIDs[0].ID.TrustDomain().Name())
	}
	var buf bytes.Buffer
	if err := writePEMCerts(&buf, b.X509Authorities()); err != nil {
		return err
	}
	path := filepath.Join(dir, "bundle.pem")
	if err := writeFileAtomic(path, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %s\n", path)
	return nil
}

// writeFileAtomic writes data to a temporary file created with mode 0600
// (so a key is never readable by others, even briefly), sets mode, and
// renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(mode); err != nil {
		_ = f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
