package awsiid

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Refusal reasons. The agent sees "attestation failed: <reason>"; the
// account, region and start time in some of them come from the document
// the agent itself presented.
var (
	errMalformed = fmt.Errorf("%w: aws_iid evidence malformed", attestor.ErrAttestationFailed)
	errSignature = fmt.Errorf("%w: aws_iid signature not made by any configured AWS certificate "+
		"(document altered, or its region's RSA certificate missing from the server's certificates)", attestor.ErrAttestationFailed)
	errDocument = fmt.Errorf("%w: aws_iid instance identity document unusable", attestor.ErrAttestationFailed)
	errAccount  = fmt.Errorf("%w: aws_iid account not allowed", attestor.ErrAttestationFailed)
	errRegion   = fmt.Errorf("%w: aws_iid region not allowed", attestor.ErrAttestationFailed)
	errTooOld   = fmt.Errorf("%w: aws_iid instance started longer ago than the server's max_instance_age", attestor.ErrAttestationFailed)
)

// VerifierConfig configures the server half.
type VerifierConfig struct {
	// TrustDomain is the domain agent IDs are minted in. Required.
	TrustDomain spiffeid.TrustDomain
	// Certificates are AWS's public "RSA" certificates of the regions
	// whose instances may attest (ParseCertificates reads them). A
	// document is authentic when one of them verifies its signature.
	// Required.
	Certificates []*x509.Certificate
	// Accounts are the AWS account IDs whose instances may attest.
	// Required: an empty list would admit every AWS account's instances.
	Accounts []string
	// Regions, if set, are the only regions whose instances may attest.
	Regions []string
	// MaxInstanceAge, if set, refuses instances whose pendingTime (the
	// time the instance last started) is longer ago than this: the
	// document never expires, so this bounds how long a copy of it can
	// attest an instance that has not attested yet.
	MaxInstanceAge time.Duration
	// Clock decides instance age. Defaults to the wall clock.
	Clock clock.Clock
	// Log receives a line per attestation. Defaults to slog.Default().
	Log *slog.Logger
}

// Verifier is the server half. It implements attestor.NodeVerifier, holds
// no state between attestations and is safe for concurrent use.
type Verifier struct {
	td       spiffeid.TrustDomain
	keys     []*rsa.PublicKey
	accounts map[string]bool
	regions  map[string]bool // nil: any region
	maxAge   time.Duration
	clock    clock.Clock
	log      *slog.Logger
}

var _ attestor.NodeVerifier = (*Verifier)(nil)

// NewVerifier checks cfg, reporting every problem at once.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	var errs []error
	fail := func(field string, err error) { errs = append(errs, fmt.Errorf("aws_iid verifier: %s: %w", field, err)) }
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain", errors.New("must be set"))
	}
	if len(cfg.Certificates) == 0 {
		fail("Certificates", errors.New("must hold at least one AWS RSA certificate"))
	} else if len(cfg.Certificates) > maxCertificates {
		fail("Certificates", fmt.Errorf("%d certificates, more than %d", len(cfg.Certificates), maxCertificates))
	}
	v := &Verifier{td: cfg.TrustDomain, accounts: map[string]bool{}, maxAge: cfg.MaxInstanceAge, clock: clock.OrReal(cfg.Clock)}
	for i, c := range cfg.Certificates {
		if c == nil {
			fail(fmt.Sprintf("Certificates[%d]", i), errors.New("is nil"))
			continue
		}
		if err := checkKey(c); err != nil {
			fail(fmt.Sprintf("Certificates[%d]", i), err)
			continue
		}
		v.keys = append(v.keys, c.PublicKey.(*rsa.PublicKey))
	}
	if len(cfg.Accounts) == 0 {
		fail("Accounts", errors.New("must name at least one AWS account: without it no instance may attest"))
	}
	for i, a := range cfg.Accounts {
		if err := CheckAccountID(a); err != nil {
			fail(fmt.Sprintf("Accounts[%d]", i), err)
		}
		v.accounts[a] = true
	}
	if len(cfg.Regions) > 0 {
		v.regions = map[string]bool{}
	}
	for i, r := range cfg.Regions {
		if err := CheckRegion(r); err != nil {
			fail(fmt.Sprintf("Regions[%d]", i), err)
		}
		v.regions[r] = true
	}
	if cfg.MaxInstanceAge < 0 {
		fail("MaxInstanceAge", fmt.Errorf("%v is negative", cfg.MaxInstanceAge))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	v.log = cfg.Log.With(telemetry.Attestor, Type)
	return v, nil
}

// Type returns "aws_iid".
func (v *Verifier) Type() string { return Type }

// Attest verifies the document's signature, then its account, region and
// age. There is no challenge: the document cannot answer one, which is
// why the result is trust-on-first-use.
func (v *Verifier) Attest(ctx context.Context, data []byte, _ attestor.Challenger) (attestor.NodeResult, error) {
	if err := ctx.Err(); err != nil {
		return attestor.NodeResult{}, fmt.Errorf("aws_iid attestation: %w", err)
	}
	p, err := decodePayload(data)
	if err != nil {
		return v.refuse(v.log, errMalformed, err)
	}
	// The document is parsed only once AWS's signature vouches for it.
	if !v.authentic(p) {
		return v.refuse(v.log, errSignature, nil)
	}
	d, err := parseDocument(p.Document)
	if err != nil {
		return v.refuse(v.log, errDocument, err)
	}
	id, err := agentid.New(v.td, Type, d.AccountID+"/"+d.Region+"/"+d.InstanceID)
	if err != nil {
		return v.refuse(v.log, errDocument, err)
	}
	log := v.log.With(telemetry.SPIFFEID, id.String())
	if err := v.admissible(d); err != nil {
		return v.refuse(log, err, nil)
	}
	res := attestor.NodeResult{
		AgentID:     id,
		Selectors:   selectors(log, d),
		CanReattest: true,
		// Anyone holding a copy of the document could present it again.
		TrustOnFirstUse: true,
	}
	log.Debug("aws_iid evidence verified")
	return res, nil
}

// authentic reports whether one of the configured keys signed the
// document: RSA PKCS #1 v1.5 over its SHA-256, as AWS signs it.
func (v *Verifier) authentic(p payload) bool {
	digest := sha256.Sum256(p.Document)
	for _, k := range v.keys {
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], p.Signature) == nil {
			return true
		}
	}
	return false
}

// admissible applies the operator's account, region and age limits.
func (v *Verifier) admissible(d document) error {
	if !v.accounts[d.AccountID] {
		return fmt.Errorf("%w: %s", errAccount, d.AccountID)
	}
	if v.regions != nil && !v.regions[d.Region] {
		return fmt.Errorf("%w: %s", errRegion, d.Region)
	}
	if v.maxAge == 0 {
		return nil
	}
	started, err := time.Parse(time.RFC3339, d.PendingTime)
	if err != nil {
		return fmt.Errorf("%w: pendingTime %q is not an RFC 3339 time, so the instance's age is unknown", errDocument, d.PendingTime)
	}
	if age := v.clock.Now().Sub(started); age > v.maxAge {
		return fmt.Errorf("%w (started %s, %s ago)", errTooOld, started.UTC().Format(time.RFC3339), age.Truncate(time.Second))
	}
	return nil
}

// refuse logs a refusal's detail at debug level (the agent API logs the
// reason) and returns it.
func (v *Verifier) refuse(log *slog.Logger, err, detail error) (attestor.NodeResult, error) {
	if log.Enabled(context.Background(), slog.LevelDebug) {
		attrs := []any{telemetry.Reason, strings.TrimPrefix(err.Error(), attestor.ErrAttestationFailed.Error()+": ")}
		if detail != nil {
			attrs = append(attrs, telemetry.Error, detail)
		}
		log.Debug("aws_iid evidence refused", attrs...)
	}
	return attestor.NodeResult{}, err
}

// selectors describes the instance. Account, region and instance ID were
// checked with the document; a zone, image or type AWS writes in a form
// that cannot be a selector value is left out (and logged), so an entry
// needing it does not match while the rest still hold.
func selectors(log *slog.Logger, d document) []selector.Selector {
	var out []selector.Selector
	add := func(kind, value string, ok bool) {
		if !ok {
			log.Warn("leaving out an unusable aws_iid selector", telemetry.Selectors, kind+":"+value)
			return
		}
		out = append(out, selector.Must(Type+":"+kind+":"+value))
	}
	add("account", d.AccountID, true)
	add("region", d.Region, true)
	add("instance_id", d.InstanceID, true)
	add("az", d.AvailabilityZone, plainRE.MatchString(d.AvailabilityZone))
	add("image_id", d.ImageID, imageRE.MatchString(d.ImageID))
	add("instance_type", d.InstanceType, plainRE.MatchString(d.InstanceType))
	return out
}
