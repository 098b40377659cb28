package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/nhid/nhid/pkg/svid"
)

// stateRecord is state.json. Certificates and public keys are DER, which
// encoding/json writes as base64.
type stateRecord struct {
	Version int `json:"version"`
	// X509 are the X.509 CAs.
	X509 []slotRecord `json:"x509"`
	// X509Authorities are the trust anchors this CA has published: its own
	// roots, or the upstream roots its CAs chain to.
	X509Authorities [][]byte `json:"x509_authorities"`
	// JWT are the JWT signing keys.
	JWT []slotRecord `json:"jwt"`
}

type slotRecord struct {
	ID          string    `json:"id"`
	Status      status    `json:"status"`
	KeyFile     string    `json:"key_file,omitempty"`
	PublishedAt time.Time `json:"published_at"`
	// Chain (X.509) is the CA certificate, then the upstream intermediates.
	Chain [][]byte `json:"chain,omitempty"`
	// PublicKey (JWT) is PKIX DER; the validity is the key's.
	PublicKey []byte    `json:"public_key,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

func toRecord(st state) stateRecord {
	rec := stateRecord{Version: stateVersion, X509: []slotRecord{}, X509Authorities: [][]byte{}, JWT: []slotRecord{}}
	for _, s := range st.x509 {
		r := slotRecord{ID: s.id, Status: s.status, KeyFile: s.keyFile, PublishedAt: s.publishedAt.UTC()}
		r.Chain = append(r.Chain, s.cert.Raw)
		for _, c := range s.chain {
			r.Chain = append(r.Chain, c.Raw)
		}
		rec.X509 = append(rec.X509, r)
	}
	for _, a := range st.anchors {
		rec.X509Authorities = append(rec.X509Authorities, a.Raw)
	}
	for _, s := range st.jwt {
		rec.JWT = append(rec.JWT, slotRecord{
			ID: s.id, Status: s.status, KeyFile: s.keyFile, PublishedAt: s.publishedAt.UTC(),
			PublicKey: s.pubDER, NotBefore: s.notBefore.UTC(), NotAfter: s.notAfter.UTC(),
		})
	}
	return rec
}

func (f *fileStore) fromRecord(rec stateRecord) (state, error) {
	var st state
	for i, r := range rec.X509 {
		s, err := f.x509FromRecord(r)
		if err != nil {
			return state{}, fmt.Errorf("x509[%d]: %w", i, err)
		}
		st.x509 = append(st.x509, s)
	}
	for i, der := range rec.X509Authorities {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return state{}, fmt.Errorf("x509_authorities[%d]: %w", i, err)
		}
		st.anchors = append(st.anchors, cert)
	}
	for i, r := range rec.JWT {
		s, err := f.jwtFromRecord(r)
		if err != nil {
			return state{}, fmt.Errorf("jwt[%d]: %w", i, err)
		}
		st.jwt = append(st.jwt, s)
	}
	if err := checkSlots("x509", st.x509); err != nil {
		return state{}, err
	}
	if err := checkSlots("jwt", st.jwt); err != nil {
		return state{}, err
	}
	if err := checkChains(st); err != nil {
		return state{}, err
	}
	return st, nil
}

// checkChains makes sure every CA that signs or will sign chains to an
// authority the state publishes; otherwise its SVIDs would verify nowhere.
func checkChains(st state) error {
	roots := x509.NewCertPool()
	for _, a := range st.anchors {
		roots.AddCert(a)
	}
	for i, s := range st.x509 {
		if s.status == statusRetired {
			continue
		}
		inters := x509.NewCertPool()
		for _, c := range s.chain {
			inters.AddCert(c)
		}
		// Mid-life, every certificate of the chain is valid: a CA is never
		// issued beyond its upstream's expiry.
		_, err := s.cert.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inters, CurrentTime: s.notBefore.Add(s.life() / 2),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return fmt.Errorf("x509[%d]: CA certificate does not chain to a published authority: %w", i, err)
		}
	}
	return nil
}

// checkSlots enforces what rotation relies on: unique ids, at most one
// active and one next slot.
func checkSlots(kind string, slots []slot) error {
	ids := make(map[string]bool)
	counts := make(map[status]int)
	for _, s := range slots {
		if ids[s.id] {
			return fmt.Errorf("%s: id %s appears twice", kind, s.id)
		}
		ids[s.id] = true
		counts[s.status]++
	}
	for _, st := range []status{statusActive, statusNext} {
		if counts[st] > 1 {
			return fmt.Errorf("%s: %d slots have status %s, at most 1 may", kind, counts[st], st)
		}
	}
	return nil
}

func (f *fileStore) x509FromRecord(r slotRecord) (slot, error) {
	if len(r.Chain) == 0 {
		return slot{}, errors.New("chain: empty")
	}
	certs := make([]*x509.Certificate, 0, len(r.Chain))
	for i, der := range r.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return slot{}, fmt.Errorf("chain[%d]: %w", i, err)
		}
		certs = append(certs, c)
	}
	cert := certs[0]
	if !cert.IsCA {
		return slot{}, errors.New("chain[0]: not a CA certificate")
	}
	if want := cert.SerialNumber.Text(16); r.ID != want {
		return slot{}, fmt.Errorf("id %q does not match the certificate serial %s", r.ID, want)
	}
	s := slot{
		id: r.ID, status: r.Status, notBefore: cert.NotBefore, notAfter: cert.NotAfter,
		publishedAt: r.PublishedAt, cert: cert, chain: certs[1:],
	}
	if err := f.loadSlotKey(&s, r.KeyFile, cert.PublicKey); err != nil {
		return slot{}, err
	}
	return s, nil
}

func (f *fileStore) jwtFromRecord(r slotRecord) (slot, error) {
	pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
	if err != nil {
		return slot{}, fmt.Errorf("public_key: %w", err)
	}
	kid, err := svid.JWTKeyID(pub)
	if err != nil {
		return slot{}, fmt.Errorf("public_key: %w", err)
	}
	if r.ID != kid {
		return slot{}, fmt.Errorf("id %q is not the key's thumbprint %s", r.ID, kid)
	}
	if !r.NotAfter.After(r.NotBefore) {
		return slot{}, errors.New("not_after is not after not_before")
	}
	s := slot{
		id: r.ID, status: r.Status, notBefore: r.NotBefore, notAfter: r.NotAfter,
		publishedAt: r.PublishedAt, pub: pub, pubDER: r.PublicKey,
	}
	if err := f.loadSlotKey(&s, r.KeyFile, pub); err != nil {
		return slot{}, err
	}
	if s.key != nil {
		if s.signer, err = svid.NewJWTSigner(s.key, s.id); err != nil {
			return slot{}, err
		}
	}
	return s, nil
}

// loadSlotKey reads the private key of a slot that may still sign; retired
// slots have none.
func (f *fileStore) loadSlotKey(s *slot, keyFile string, pub any) error {
	switch s.status {
	case statusRetired:
		if keyFile != "" {
			return errors.New("retired slot still names a key file")
		}
		return nil
	case statusActive, statusNext:
	default:
		return fmt.Errorf("status %q: must be one of active, next, retired", s.status)
	}
	key, err := f.readKey(keyFile)
	if err != nil {
		return err
	}
	if !svid.KeyMatches(key, pub) {
		return fmt.Errorf("key file %s does not hold the private key of this slot", keyFile)
	}
	s.key, s.keyFile = key, keyFile
	return nil
}
