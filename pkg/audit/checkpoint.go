package audit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// KeyID names a checkpoint key: the unpadded base64url SHA-256 of its PKIX
// (DER) public key.
func KeyID(publicKeyDER []byte) string {
	sum := sha256.Sum256(publicKeyDER)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ParsePublicKey parses a PKIX (DER) checkpoint key: ECDSA on P-256 only.
func ParsePublicKey(der []byte) (*ecdsa.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key is a %T, want ECDSA P-256", pub)
	}
	return ec, nil
}

// checkpointDigest is SHA-256 over a checkpoint's canonical encoding: the
// tag "nhid.audit.checkpoint.v1" and a zero byte, seq (8 bytes big
// endian), head_hash (length-prefixed), time (8 bytes big endian) and
// key_id (length-prefixed).
func checkpointDigest(cp *typesv1.AuditCheckpoint) []byte {
	b := append([]byte(nil), checkpointTag...)
	b = binary.BigEndian.AppendUint64(b, cp.GetSeq())
	b = appendField(b, cp.GetHeadHash())
	b = binary.BigEndian.AppendUint64(b, uint64(cp.GetTime()))
	b = appendField(b, cp.GetKeyId())
	sum := sha256.Sum256(b)
	return sum[:]
}

// SignCheckpoint signs the chain's head (seq and the hash of record seq)
// at time (unix nanoseconds) with key, an ECDSA P-256 key.
func SignCheckpoint(key crypto.Signer, seq uint64, headHash []byte, time int64, server string) (*typesv1.AuditCheckpoint, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: encode public key: %w", err)
	}
	if _, err := ParsePublicKey(der); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	cp := &typesv1.AuditCheckpoint{
		Seq: seq, HeadHash: headHash, Time: time, KeyId: KeyID(der), PublicKey: der, Server: server,
	}
	sig, err := key.Sign(rand.Reader, checkpointDigest(cp), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	cp.Signature = sig
	return cp, nil
}

// VerifyCheckpoint checks that cp's key_id names its public key and that
// its signature verifies with that key. Whether the key is trusted is the
// caller's question (see Verifier).
func VerifyCheckpoint(cp *typesv1.AuditCheckpoint) error {
	if cp.GetKeyId() != KeyID(cp.GetPublicKey()) {
		return errors.New("its key_id does not name its public key")
	}
	pub, err := ParsePublicKey(cp.GetPublicKey())
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(pub, checkpointDigest(cp), cp.GetSignature()) {
		return errors.New("its signature does not verify: it was forged or changed")
	}
	return nil
}
