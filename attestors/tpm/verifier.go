package tpm

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Type is the attestor type, "tpm".
const Type = "tpm"

// DefaultRequoteInterval is how often a connected node is quoted again.
const DefaultRequoteInterval = 10 * time.Minute

// MinRequoteInterval bounds how often a node can be made to quote.
const MinRequoteInterval = time.Second

// Refusal classes; the agent sees "attestation failed: <class>: <detail>".
var (
	errMalformed   = errors.New("malformed TPM evidence")
	errEKPublic    = errors.New("EK rejected")
	errEKUntrusted = errors.New("EK not trusted")
	errAK          = errors.New("AK rejected")
	errResponse    = errors.New("malformed challenge response")
	errActivation  = errors.New("credential activation failed: the secret does not match (the AK is not on this EK's TPM, or the response was replayed)")
	errQuote       = errors.New("quote rejected")
	errPCRPolicy   = errors.New("PCR policy not met")
	errState       = errors.New("stored attestation state unusable (evict the node so that it attests anew)")
)

// VerifierConfig configures the server half.
type VerifierConfig struct {
	// TrustDomain is the domain agent IDs are minted in. Required.
	TrustDomain spiffeid.TrustDomain
	// EKCAs are the manufacturer CA certificates EK certificates must
	// chain to: self-signed ones are roots, others intermediates.
	EKCAs []*x509.Certificate
	// EKHashAllowList holds the SHA-256 hashes (64 hex digits, of the PKIX
	// DER public key) of EKs trusted without a certificate. EKCAs, EKHashAllowList or
	// both must be set.
	EKHashAllowList []string
	// PCRSelection lists the SHA-256 PCRs quoted; default 0 to 7.
	PCRSelection []int
	// PCRPolicies are the golden sets; see PCRPolicy and docs/attestors.md.
	PCRPolicies []PCRPolicy
	// RequoteInterval is how often connected nodes are quoted again;
	// default 10m, at least 1s.
	RequoteInterval time.Duration
	// Clock decides certificate validity. Defaults to the wall clock.
	Clock clock.Clock
	// Log receives one line per refusal. Defaults to slog.Default().
	Log *slog.Logger
}

// Verifier is the server half of the TPM attestor. It implements
// attestor.NodeReattester and is safe for concurrent use.
type Verifier struct {
	td       spiffeid.TrustDomain
	trust    ekTrust
	policy   policy
	interval time.Duration
	clock    clock.Clock
	log      *slog.Logger
}

var _ attestor.NodeReattester = (*Verifier)(nil)

// NewVerifier checks cfg, reporting every problem at once.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	var errs []error
	fail := func(field string, err error) { errs = append(errs, fmt.Errorf("tpm verifier: %s: %w", field, err)) }
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain", errors.New("must be set"))
	}
	if len(cfg.EKCAs) == 0 && len(cfg.EKHashAllowList) == 0 {
		fail("EKCAs", errors.New("EKCAs or EKHashAllowList must be set: without either no EK is trusted"))
	}
	for i, c := range cfg.EKCAs {
		if c == nil || !c.IsCA {
			fail(fmt.Sprintf("EKCAs[%d]", i), errors.New("not a CA certificate"))
		}
	}
	allow := make([]string, len(cfg.EKHashAllowList))
	for i, h := range cfg.EKHashAllowList {
		d, err := ParseDigest(h)
		if err != nil {
			fail(fmt.Sprintf("EKHashAllowList[%d]", i), err)
		}
		allow[i] = hex.EncodeToString(d)
	}
	p, err := newPolicy(cfg.PCRSelection, cfg.PCRPolicies)
	if err != nil {
		errs = append(errs, fmt.Errorf("tpm verifier: %w", err))
	}
	switch {
	case cfg.RequoteInterval == 0:
		cfg.RequoteInterval = DefaultRequoteInterval
	case cfg.RequoteInterval < MinRequoteInterval:
		fail("RequoteInterval", fmt.Errorf("%v is shorter than %v", cfg.RequoteInterval, MinRequoteInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Verifier{
		td:       cfg.TrustDomain,
		trust:    newEKTrust(cfg.EKCAs, allow),
		policy:   p,
		interval: cfg.RequoteInterval,
		clock:    clock.OrReal(cfg.Clock),
		log:      cfg.Log.With(telemetry.Attestor, Type),
	}, nil
}

// Type returns "tpm".
func (v *Verifier) Type() string { return Type }

// ReattestInterval is the configured requote interval.
func (v *Verifier) ReattestInterval() time.Duration { return v.interval }

// Attest runs the credential-activation and quote protocol (see the
// package documentation): the EK must be trusted, the AK well-formed and
// on the EK's TPM, the quote fresh and signed by the AK, and the PCR
// values within policy. The node gets spiffe://<td>/nhid/agent/tpm/<EK
// public-key hash> and the selectors of nodeSelectors.
func (v *Verifier) Attest(ctx context.Context, payload []byte, challenge attestor.Challenger) (attestor.NodeResult, error) {
	if err := ctx.Err(); err != nil {
		return attestor.NodeResult{}, fmt.Errorf("tpm attestation: %w", err)
	}
	log := v.log
	ev, err := decodeEvidence(payload)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errMalformed, err)
	}
	ek, err := checkEK(ev.EKPublic)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errEKPublic, fmt.Errorf("ek_public: %w", err))
	}
	log = log.With(telemetry.EKPubHash, ek.hash)
	id, err := v.trust.trust(ek, ev.EKCert, v.clock.Now())
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errEKUntrusted, err)
	}
	ak, err := checkAK(ev.AKPublic)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errAK, fmt.Errorf("ak_public: %w", err))
	}
	values, err := v.activateAndQuote(ctx, log, ek, ak, challenge)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	matched, err := v.policy.evaluate(values, nil)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errPCRPolicy, err)
	}
	return v.result(id, ak, values, matched)
}

// activateAndQuote sends the credential and the quote request, and checks
// the answer: the secret, then the quote.
func (v *Verifier) activateAndQuote(ctx context.Context, log *slog.Logger, ek *ekKey, ak *akKey, challenge attestor.Challenger) (pcrValues, error) {
	secret, nonce := random(nonceSize), random(nonceSize)
	encKey, err := tpm2.ImportEncapsulationKey(ek.pub)
	if err != nil {
		return nil, v.refuse(log, errEKPublic, fmt.Errorf("ek_public: %w", err))
	}
	blob, encSecret, err := tpm2.CreateCredential(rand.Reader, encKey, ak.name, secret)
	if err != nil {
		return nil, fmt.Errorf("tpm attestation: make credential: %w", err)
	}
	msg := challengeFor(nonce, v.policy.selection, ak)
	msg.Credential = &credential{Blob: blob, Secret: encSecret}
	r, err := v.ask(ctx, log, challenge, msg)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(r.Secret, secret) != 1 {
		return nil, v.refuse(log, errActivation, nil)
	}
	values, err := verifyQuote(ak, nonce, v.policy.selection, r)
	if err != nil {
		return nil, v.refuse(log, errQuote, err)
	}
	return values, nil
}

func challengeFor(nonce []byte, selection []int, ak *akKey) *challenge {
	return &challenge{Version: wireVersion, Nonce: nonce, PCRs: selection, AKName: ak.name}
}

// ask sends one challenge and decodes the answer. A failing challenge
// round (the transport, the agent's own error) is not a verdict on the
// evidence and is returned as it is.
func (v *Verifier) ask(ctx context.Context, log *slog.Logger, challenge attestor.Challenger, msg *challenge) (*response, error) {
	raw, err := challenge(ctx, encode(msg))
	if err != nil {
		return nil, fmt.Errorf("tpm attestation: challenge: %w", err)
	}
	r, err := decodeResponse(raw)
	if err != nil {
		return nil, v.refuse(log, errResponse, err)
	}
	return r, nil
}

// result builds the node's identity from checked evidence.
func (v *Verifier) result(id ekIdentity, ak *akKey, values pcrValues, matched []string) (attestor.NodeResult, error) {
	agentID, err := agentid.New(v.td, Type, id.ek.hash)
	if err != nil {
		return attestor.NodeResult{}, fmt.Errorf("tpm attestation: %w", err)
	}
	return attestor.NodeResult{
		AgentID:     agentID,
		Selectors:   nodeSelectors(id, values, v.policy.selection, matched),
		CanReattest: true,
		State:       encodeState(id, ak, values, v.policy.selection),
	}, nil
}

// refuse logs a refusal with its detail and returns the error the agent
// sees: attestation failed, the class, and the detail. Details never hold
// secrets: the activation secret and nonces are not quoted.
func (v *Verifier) refuse(log *slog.Logger, class, detail error) error {
	err := fmt.Errorf("%w: %w", attestor.ErrAttestationFailed, class)
	if detail != nil {
		err = fmt.Errorf("%w: %w: %w", attestor.ErrAttestationFailed, class, detail)
	}
	log.Warn("tpm attestation refused", telemetry.Reason, err.Error())
	return err
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return b
}
