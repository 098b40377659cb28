package tpmtest

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// swtpm_setup persists the RSA EK here.
const ekHandle = tpm2.TPMHandle(0x81010001)

// EKPublicKey reads the RSA EK swtpm_setup created.
func (tp *TPM) EKPublicKey(t testing.TB) crypto.PublicKey {
	t.Helper()
	conn := tp.Open(t)
	defer conn.Close()
	rp, err := tpm2.ReadPublic{ObjectHandle: ekHandle}.Execute(conn)
	if err != nil {
		t.Fatalf("read the EK: %v", err)
	}
	pub, err := rp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// EKHash is the hex SHA-256 of the EK's PKIX DER public key: the node id
// the TPM attestor gives this TPM.
func (tp *TPM) EKHash(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(tp.EKPublicKey(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
