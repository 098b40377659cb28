package notify

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Bounds of a webhook secret.
const (
	// MinSecretBytes: a shorter HMAC key could be guessed.
	MinSecretBytes = 32
	// MaxSecretBytes bounds what ReadSecretFile reads.
	MaxSecretBytes = 4096
)

// ReadSecretFile reads a webhook secret: the file's bytes without a
// trailing newline, at least MinSecretBytes long, in a file other users
// cannot read. The error never contains the secret.
func ReadSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("webhook secret: %s is not a regular file", path)
	case fi.Mode().Perm()&0o007 != 0:
		return nil, fmt.Errorf("webhook secret: %s is readable by other users (mode %v): chmod o-rwx it", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("webhook secret: read %s: %w", path, err)
	}
	if len(b) > MaxSecretBytes {
		return nil, fmt.Errorf("webhook secret: %s is larger than %d bytes", path, MaxSecretBytes)
	}
	secret := bytes.TrimRight(b, "\r\n")
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("webhook secret: %s holds %d bytes, at least %d are required (e.g. openssl rand -hex 32)", path, len(secret), MinSecretBytes)
	}
	return secret, nil
}
