package tpm

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/nhid/nhid/attestors/tpm/tpmconn"
	"github.com/nhid/nhid/pkg/telemetry"
)

// quoteAttempts bounds quoting again when a PCR is extended between the
// quote and the reading of the values.
const quoteAttempts = 3

// EvidenceConfig configures the agent half.
type EvidenceConfig struct {
	// Device is the TPM character device; default /dev/tpmrm0 (the
	// kernel's resource manager). Ignored when SWTPM is set.
	Device string
	// SWTPM is the address of a swtpm TCP command channel, HOST:PORT, for
	// tests and development.
	SWTPM string
	// AKType is the attestation key's algorithm; default ec-p256.
	// Changing it changes the AK, which the server then no longer knows:
	// the node must attest again.
	AKType AKType
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Evidence is the agent half of the TPM attestor. It implements
// attestor.NodeEvidence, and answers the server's re-quotes with the same
// Respond. It is safe for concurrent use; TPM conversations take turns.
type Evidence struct {
	akType   AKType
	template tpm2.TPMTPublic
	open     func(context.Context) (transport.TPMCloser, error)
	log      *slog.Logger
	mu       sync.Mutex
}

// NewEvidence checks cfg. It does not touch the TPM: that happens on each
// Evidence and Respond call, which open the TPM and close it again, so
// that the agent holds no TPM resources between attestations.
func NewEvidence(cfg EvidenceConfig) (*Evidence, error) {
	akType, err := ParseAKType(string(cfg.AKType))
	if err != nil {
		return nil, fmt.Errorf("tpm evidence: AKType: %w", err)
	}
	e := &Evidence{akType: akType, template: akTemplate(akType), log: cfg.Log}
	if e.log == nil {
		e.log = slog.Default()
	}
	switch {
	case cfg.SWTPM != "":
		addr := cfg.SWTPM
		e.open = func(ctx context.Context) (transport.TPMCloser, error) { return tpmconn.DialSWTPM(ctx, addr) }
	default:
		dev := cfg.Device
		if dev == "" {
			dev = tpmconn.DefaultDevice
		}
		e.open = func(context.Context) (transport.TPMCloser, error) { return tpmconn.OpenDevice(dev) }
	}
	return e, nil
}

// Type returns "tpm".
func (e *Evidence) Type() string { return Type }

// CanReattest reports that a TPM node can always attest again.
func (e *Evidence) CanReattest() bool { return true }

// Evidence reads the EK and its certificate and creates the AK.
func (e *Evidence) Evidence(ctx context.Context) ([]byte, error) {
	var ev *evidence
	err := e.withTPM(ctx, func(tpm transport.TPM) error {
		ek, err := loadEK(tpm)
		if err != nil {
			return err
		}
		defer ek.flush(tpm)
		cert, err := readEKCert(tpm)
		if err != nil {
			return err
		}
		ak, err := createAK(tpm, e.template)
		if err != nil {
			return err
		}
		defer ak.flush(tpm)
		ev = &evidence{Version: wireVersion, EKPublic: ek.public, EKCert: cert, AKPublic: ak.public}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm evidence: %w", err)
	}
	return encode(ev), nil
}

// Respond answers a challenge: it activates the credential, if there is
// one, and quotes the requested PCRs over the nonce with the AK.
func (e *Evidence) Respond(ctx context.Context, raw []byte) ([]byte, error) {
	c, err := decodeChallenge(raw)
	if err != nil {
		return nil, fmt.Errorf("tpm challenge: %w", err)
	}
	var r *response
	err = e.withTPM(ctx, func(tpm transport.TPM) error {
		ak, err := createAK(tpm, e.template)
		if err != nil {
			return err
		}
		defer ak.flush(tpm)
		if !bytes.Equal(ak.name.Buffer, c.AKName) {
			return fmt.Errorf("the server expects the AK named %s but this TPM's %s AK is %s: "+
				"was the AK type changed since the node attested? Evict the node so that it attests again",
				hex.EncodeToString(c.AKName), e.akType, hex.EncodeToString(ak.name.Buffer))
		}
		var secret []byte
		if c.Credential != nil {
			if secret, err = e.activate(tpm, ak, c.Credential); err != nil {
				return err
			}
		}
		if r, err = quote(tpm, ak, c.Nonce, c.PCRs); err != nil {
			return err
		}
		r.Secret = secret
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm challenge: %w", err)
	}
	return encode(r), nil
}

func (e *Evidence) activate(tpm transport.TPM, ak tpmKey, c *credential) ([]byte, error) {
	ek, err := loadEK(tpm)
	if err != nil {
		return nil, err
	}
	defer ek.flush(tpm)
	return activate(tpm, ek, ak, c)
}

// quote quotes and reads the PCRs until the values read are those quoted.
func quote(tpm transport.TPM, ak tpmKey, nonce []byte, pcrs []int) (*response, error) {
	for range quoteAttempts {
		r, digest, err := quoteOnce(tpm, ak, nonce, pcrs)
		if err != nil {
			return nil, err
		}
		values := make(pcrValues, len(r.PCRs))
		for _, v := range r.PCRs {
			values[v.Index] = v.Digest
		}
		if bytes.Equal(pcrDigest(values, pcrs), digest) {
			return r, nil
		}
	}
	return nil, fmt.Errorf("quote: PCRs kept changing between the quote and reading them (%d attempts)", quoteAttempts)
}

// withTPM runs fn on a fresh TPM connection, one conversation at a time.
func (e *Evidence) withTPM(ctx context.Context, fn func(transport.TPM) error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	tpm, err := e.open(ctx)
	if err != nil {
		return err
	}
	fnErr := fn(tpm)
	if err := tpm.Close(); err != nil {
		e.log.Warn("closing the TPM failed", telemetry.Error, err)
	}
	if fnErr != nil && ctx.Err() != nil {
		return errors.Join(ctx.Err(), fnErr)
	}
	return fnErr
}
