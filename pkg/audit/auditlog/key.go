package auditlog

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nhid/nhid/pkg/atomicfile"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
)

const (
	keyDirPerm  = 0o700
	keyFilePerm = 0o600
)

// loadOrCreateKey reads the checkpoint key at path (PKCS#8 PEM, ECDSA
// P-256), or creates it (directory 0700, file 0600, written atomically) when
// there is none. created says which. The key itself is never logged.
func loadOrCreateKey(path string, log *slog.Logger) (key *ecdsa.PrivateKey, created bool, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, keyDirPerm); err != nil {
		return nil, false, fmt.Errorf("audit key: create %s: %w", dir, err)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("audit key: generate: %w", err)
		}
		pemBytes, err := svid.EncodePrivateKeyPEM(key)
		if err != nil {
			return nil, false, fmt.Errorf("audit key: %w", err)
		}
		if err := atomicfile.Write(path, pemBytes, keyFilePerm); err != nil {
			return nil, false, fmt.Errorf("audit key: save %s: %w", path, err)
		}
		return key, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("audit key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&^keyFilePerm != 0 {
		if err := os.Chmod(path, keyFilePerm); err != nil {
			return nil, false, fmt.Errorf("audit key %s: restrict to 0600: %w", path, err)
		}
		log.Warn("audit checkpoint key file was accessible to others; restricted it to 0600", telemetry.Path, path)
	}
	signer, err := svid.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, false, fmt.Errorf("audit key %s: %w (move it away to start with a new key)", path, err)
	}
	ec, ok := signer.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, false, fmt.Errorf("audit key %s: is a %T, want an ECDSA P-256 key", path, signer)
	}
	return ec, false, nil
}
