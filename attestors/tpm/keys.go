package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// AKType names the algorithm of the attestation key.
type AKType string

// The attestation key types.
const (
	AKRSA2048 AKType = "rsa-2048"
	AKECP256  AKType = "ec-p256"
)

// AKTypes lists the attestation key types, the default first.
var AKTypes = []AKType{AKECP256, AKRSA2048}

// ParseAKType reads an AK type; "" is the default, ec-p256.
func ParseAKType(s string) (AKType, error) {
	if s == "" {
		return AKECP256, nil
	}
	for _, t := range AKTypes {
		if string(t) == s {
			return t, nil
		}
	}
	names := make([]string, len(AKTypes))
	for i, t := range AKTypes {
		names[i] = string(t)
	}
	return "", fmt.Errorf("AK type %q: must be one of %s", s, strings.Join(names, ", "))
}

// akAttributes are those of a restricted signing key that never leaves the
// TPM: it signs only TPM-generated structures (quotes), so a signed quote
// proves the TPM produced it.
var akAttributes = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	Restricted:          true,
	SignEncrypt:         true,
}

// akTemplate is the AK's template. The agent creates the AK as a primary
// key of the endorsement hierarchy, as the TCG creates an IAK: the same
// template gives the same key on every call, so the agent keeps no key
// file and the server can go on quoting the AK it bound to the EK.
func akTemplate(t AKType) tpm2.TPMTPublic {
	if t == AKRSA2048 {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttributes,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	}
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttributes,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// parsePublic decodes a TPMT_PUBLIC. The encoding must be canonical (it
// re-encodes to the same bytes, with nothing trailing): the TPM computes
// an object's name from its canonical encoding, and so does the server.
func parsePublic(b []byte) (pub *tpm2.TPMTPublic, err error) {
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	defer func() {
		// go-tpm's decoder is not hardened against every hostile input.
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("undecodable TPMT_PUBLIC: %v", r)
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("undecodable TPMT_PUBLIC: %w", err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), b) {
		return nil, errors.New("TPMT_PUBLIC is not canonically encoded or has trailing bytes")
	}
	return pub, nil
}

// ekKey is a checked endorsement key.
type ekKey struct {
	// raw is the TPMT_PUBLIC as the agent sent it.
	raw []byte
	pub *tpm2.TPMTPublic
	key *rsa.PublicKey
	// hash is the lowercase hex SHA-256 of the key's PKIX DER encoding:
	// the node's stable identifier.
	hash string
}

// checkEK checks pub is an EK of the TCG's RSA-2048 template: a restricted
// decryption key with the standard policy (PolicySecret of the endorsement
// hierarchy), SHA-256 names and AES-128-CFB, which is what credential
// activation is computed for.
func checkEK(b []byte) (*ekKey, error) {
	pub, err := parsePublic(b)
	if err != nil {
		return nil, err
	}
	want := tpm2.RSAEKTemplate
	rsaParms, err := pub.Parameters.RSADetail()
	switch {
	case pub.Type != tpm2.TPMAlgRSA || err != nil:
		return nil, fmt.Errorf("type %v, want RSA", pub.Type)
	case pub.NameAlg != want.NameAlg:
		return nil, fmt.Errorf("name algorithm %v, want SHA-256", pub.NameAlg)
	case !bytes.Equal(tpm2.Marshal(pub.ObjectAttributes), tpm2.Marshal(want.ObjectAttributes)):
		return nil, errors.New("attributes are not those of the standard EK template (restricted decryption, fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy)")
	case !bytes.Equal(pub.AuthPolicy.Buffer, want.AuthPolicy.Buffer):
		return nil, errors.New("auth policy is not the standard EK policy")
	}
	wantParms, _ := want.Parameters.RSADetail()
	if !bytes.Equal(tpm2.Marshal(rsaParms), tpm2.Marshal(wantParms)) {
		return nil, errors.New("parameters are not the standard EK's (RSA-2048, AES-128-CFB)")
	}
	key, err := rsaKey(pub)
	if err != nil {
		return nil, err
	}
	if key.N.BitLen() != 2048 {
		return nil, fmt.Errorf("RSA modulus of %d bits, want 2048", key.N.BitLen())
	}
	hash, err := keyHash(key)
	if err != nil {
		return nil, err
	}
	return &ekKey{raw: bytes.Clone(b), pub: pub, key: key, hash: hash}, nil
}

func rsaKey(pub *tpm2.TPMTPublic) (*rsa.PublicKey, error) {
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	key, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want RSA", k)
	}
	return key, nil
}

// keyHash is the lowercase hex SHA-256 of the key's PKIX DER encoding.
func keyHash(key crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// akKey is a checked attestation key.
type akKey struct {
	// raw is the TPMT_PUBLIC as the agent sent it.
	raw []byte
	key crypto.PublicKey
	// sigAlg is the signature scheme the AK's quotes carry.
	sigAlg tpm2.TPMAlgID
	// name is the TPM name: nameAlg || SHA-256(TPMT_PUBLIC).
	name []byte
}

// checkAK checks the AK is a restricted signing key that cannot leave its
// TPM (fixedTPM, fixedParent, sensitiveDataOrigin) and signs with SHA-256:
// RSA-2048 with RSASSA or ECC P-256 with ECDSA. It computes the AK's name
// itself, so the credential is bound to exactly this key.
func checkAK(b []byte) (*akKey, error) {
	pub, err := parsePublic(b)
	if err != nil {
		return nil, err
	}
	a := pub.ObjectAttributes
	switch {
	case !a.Restricted:
		return nil, errors.New("not restricted: an unrestricted key could sign a forged quote")
	case !a.SignEncrypt:
		return nil, errors.New("not a signing key")
	case a.Decrypt:
		return nil, errors.New("also a decryption key; an AK must only sign")
	case !a.FixedTPM || !a.FixedParent:
		return nil, errors.New("not fixedTPM and fixedParent: the key could leave the TPM")
	case !a.SensitiveDataOrigin:
		return nil, errors.New("not sensitiveDataOrigin: the TPM did not generate the private key")
	case pub.NameAlg != tpm2.TPMAlgSHA256:
		return nil, fmt.Errorf("name algorithm %v, want SHA-256", pub.NameAlg)
	}
	ak := &akKey{raw: bytes.Clone(b)}
	if ak.key, ak.sigAlg, err = akPublicKey(pub); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	ak.name = append([]byte{0x00, byte(tpm2.TPMAlgSHA256)}, sum[:]...)
	return ak, nil
}

func akPublicKey(pub *tpm2.TPMTPublic) (crypto.PublicKey, tpm2.TPMAlgID, error) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		key, err := rsaAK(pub)
		return key, tpm2.TPMAlgRSASSA, err
	case tpm2.TPMAlgECC:
		key, err := eccAK(pub)
		return key, tpm2.TPMAlgECDSA, err
	}
	return nil, 0, fmt.Errorf("type %v, want RSA or ECC", pub.Type)
}

// rsaAK checks an RSA AK is RSA-2048 signing with RSASSA and SHA-256.
func rsaAK(pub *tpm2.TPMTPublic) (*rsa.PublicKey, error) {
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, fmt.Errorf("RSA parameters: %w", err)
	}
	if parms.KeyBits != 2048 || parms.Scheme.Scheme != tpm2.TPMAlgRSASSA {
		return nil, fmt.Errorf("RSA-%d with scheme %v, want RSA-2048 with RSASSA", parms.KeyBits, parms.Scheme.Scheme)
	}
	if scheme, err := parms.Scheme.Details.RSASSA(); err != nil || scheme.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, errors.New("the RSASSA scheme does not sign with SHA-256")
	}
	return rsaKey(pub)
}

// eccAK checks an ECC AK is P-256 signing with ECDSA and SHA-256.
func eccAK(pub *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("ECC parameters: %w", err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 || parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, fmt.Errorf("curve %v with scheme %v, want P-256 with ECDSA", parms.CurveID, parms.Scheme.Scheme)
	}
	if scheme, err := parms.Scheme.Details.ECDSA(); err != nil || scheme.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, errors.New("the ECDSA scheme does not sign with SHA-256")
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	key, ok := k.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key is %T, want ECDSA P-256", k)
	}
	return key, nil
}
