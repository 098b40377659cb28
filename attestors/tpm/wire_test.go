package tpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestDecode_IsStrict(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"unknown field", `{"version":1,"ek_public":"AA==","ak_public":"AA==","extra":1}`, "unknown field"},
		{"trailing data", `{"version":1,"ek_public":"AA==","ak_public":"AA=="} {}`, "trailing data"},
		{"other version", `{"version":2,"ek_public":"AA==","ak_public":"AA=="}`, "version 2"},
		{"missing AK", `{"version":1,"ek_public":"AA=="}`, "ak_public: missing"},
		{"oversized", `{"version":1,"ek_public":"` + strings.Repeat("A", maxMessage) + `"}`, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeEvidence([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decodeEvidence err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDecodeChallenge_ChecksFields(t *testing.T) {
	nonce := bytes.Repeat([]byte{1}, 32)
	tests := []struct {
		name string
		c    challenge
		want string
	}{
		{"short nonce", challenge{Version: 1, Nonce: nonce[:8], PCRs: []int{0}, AKName: []byte{1}}, "nonce: 8 bytes"},
		{"no PCRs", challenge{Version: 1, Nonce: nonce, AKName: []byte{1}}, "pcrs: none"},
		{"PCR out of range", challenge{Version: 1, Nonce: nonce, PCRs: []int{0, 30}, AKName: []byte{1}}, "pcrs[1]"},
		{"no AK name", challenge{Version: 1, Nonce: nonce, PCRs: []int{0}}, "ak_name: missing"},
		{"half a credential", challenge{Version: 1, Nonce: nonce, PCRs: []int{0}, AKName: []byte{1}, Credential: &credential{Blob: []byte{1}}}, "credential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeChallenge(encode(tt.c))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decodeChallenge err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// FuzzAttest feeds arbitrary evidence and answers to the verifier: it may
// refuse, never panic, and never accept.
func FuzzAttest(f *testing.F) {
	f.Add([]byte(`{"version":1,"ek_public":"AAEACwADALIAIINxl2dEhLP4GpDMjUal1yT9UtduBlILZPKh2hszFGmqAAYAgABDABAIAAAAAAABAA==","ak_public":"ACMACwAFBHIAAAAQABgACwADABAAAAAA"}`),
		[]byte(`{"version":1,"secret":"AA==","quote":"/1RDR4AY","signature":"ABQACw==","pcrs":[]}`))
	f.Add([]byte(`{}`), []byte(`{}`))
	v, err := NewVerifier(VerifierConfig{TrustDomain: testTD, EKHashAllowList: []string{hexOf(digest(1))}, Log: discardLog()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload, answer []byte) {
		respond := func(context.Context, []byte) ([]byte, error) { return answer, nil }
		if _, err := v.Attest(context.Background(), payload, respond); err == nil {
			t.Fatalf("Attest accepted fuzzed evidence %q / %q", payload, answer)
		}
	})
}

// FuzzVerifyQuote decodes arbitrary quotes and signatures without panicking.
func FuzzVerifyQuote(f *testing.F) {
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18, 0, 0}, []byte{0, 0x14, 0, 0x0b, 0, 0})
	ak, err := checkAK(softwareAK(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, quote, sig []byte) {
		r := &response{Quote: quote, Signature: sig}
		if _, err := verifyQuote(ak, digest(1), []int{0}, r); err == nil {
			t.Fatal("verifyQuote accepted a fuzzed quote")
		}
	})
}

// softwareAK is the TPMT_PUBLIC of an ECC AK whose point is a software
// key's, for tests that need a well-formed AK without a TPM.
func softwareAK(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := akTemplate(AKECP256)
	point := tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: key.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: key.Y.FillBytes(make([]byte, 32))}}
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &point)
	return tpm2.Marshal(pub)
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
