// Package agentsvid owns nhid-agent's own identity: node attestation (the
// Attest stream with a node attestor's evidence and challenges), renewal,
// the agent SVID file in the data directory, and the Source through which
// the agent's mTLS connections to the server always present the current
// SVID.
package agentsvid

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/atomicfile"
)

// FileName is the agent SVID file in the data directory: the private key
// and the certificate chain in one PEM file, so that one atomic rename
// replaces both and a crash can never pair a key with another certificate.
const FileName = "agent_svid.pem"

// Load reads the agent SVID stored in dataDir. It returns nil and no error
// when none is stored.
func Load(dataDir string) (*x509svid.SVID, error) {
	path := filepath.Join(dataDir, FileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent SVID: %w", err)
	}
	var keyDER, certsDER []byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PRIVATE KEY":
			if keyDER != nil {
				return nil, fmt.Errorf("agent SVID %s: more than one private key", path)
			}
			keyDER = block.Bytes
		case "CERTIFICATE":
			certsDER = append(certsDER, block.Bytes...)
		default:
			return nil, fmt.Errorf("agent SVID %s: unexpected PEM block %q", path, block.Type)
		}
	}
	if keyDER == nil || certsDER == nil {
		return nil, fmt.Errorf("agent SVID %s: needs a PRIVATE KEY and at least one CERTIFICATE", path)
	}
	s, err := x509svid.ParseRaw(certsDER, keyDER)
	if err != nil {
		return nil, fmt.Errorf("agent SVID %s: %w", path, err)
	}
	return s, nil
}

// Save stores s in dataDir (0600), replacing any earlier SVID atomically.
func Save(dataDir string, s *x509svid.SVID) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
	if err != nil {
		return fmt.Errorf("save agent SVID: encode key: %w", err)
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, c := range s.Certificates {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	if err := atomicfile.Write(filepath.Join(dataDir, FileName), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("save agent SVID: %w", err)
	}
	return nil
}

// Remove deletes the stored agent SVID, after the node was evicted: it can
// never be used again. Removing a missing file is not an error.
func Remove(dataDir string) error {
	err := os.Remove(filepath.Join(dataDir, FileName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove agent SVID: %w", err)
	}
	return nil
}

// Source is an x509svid.Source whose SVID can be replaced while TLS
// configurations built on it are in use. The zero value holds none.
type Source struct {
	s atomic.Pointer[x509svid.SVID]
}

var _ x509svid.Source = (*Source)(nil)

// Set makes s the current SVID; nil clears it.
func (src *Source) Set(s *x509svid.SVID) { src.s.Store(s) }

// Get returns the current SVID, or nil.
func (src *Source) Get() *x509svid.SVID { return src.s.Load() }

// GetX509SVID implements x509svid.Source.
func (src *Source) GetX509SVID() (*x509svid.SVID, error) {
	s := src.s.Load()
	if s == nil {
		return nil, errors.New("no agent SVID yet")
	}
	return s, nil
}
