package tpm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// wireVersion is the version of the messages below; a peer speaking
// another is refused with a clear reason rather than misread.
const wireVersion = 1

// maxMessage bounds every message of the protocol. The largest, the
// evidence, holds an EK certificate (about 1 KiB, at most a few) and two
// public areas.
const maxMessage = 16 << 10

// evidence is the agent's first message: its TPM's EK and the AK it
// wants certified.
type evidence struct {
	Version int `json:"version"`
	// EKPublic is the EK's TPMT_PUBLIC.
	EKPublic []byte `json:"ek_public"`
	// EKCert is the EK certificate (DER) from NV index 0x01C00002, if the
	// TPM has one.
	EKCert []byte `json:"ek_cert,omitempty"`
	// AKPublic is the AK's TPMT_PUBLIC.
	AKPublic []byte `json:"ak_public"`
}

// challenge is a server challenge: a quote of PCRs over Nonce, and, at
// attestation, a credential to activate first.
type challenge struct {
	Version int `json:"version"`
	// Credential is set at attestation: MakeCredential to the EK, bound
	// to the AK's name; the agent returns the secret it hides.
	Credential *credential `json:"credential,omitempty"`
	// Nonce is the quote's qualifying data.
	Nonce []byte `json:"nonce"`
	// PCRs are the SHA-256 PCRs to quote, ascending.
	PCRs []int `json:"pcrs"`
	// AKName is the name of the AK the server expects the quote from, so
	// the agent can tell when its AK is not the one the server knows.
	AKName []byte `json:"ak_name"`
}

// credential is the output of MakeCredential.
type credential struct {
	// Blob is the TPM2B_ID_OBJECT contents.
	Blob []byte `json:"blob"`
	// Secret is the TPM2B_ENCRYPTED_SECRET contents.
	Secret []byte `json:"secret"`
}

// response answers a challenge.
type response struct {
	Version int `json:"version"`
	// Secret is the activated credential; empty when none was asked for.
	Secret []byte `json:"secret,omitempty"`
	// Quote is the TPMS_ATTEST the AK signed.
	Quote []byte `json:"quote"`
	// Signature is the TPMT_SIGNATURE over Quote.
	Signature []byte `json:"signature"`
	// PCRs are the quoted PCRs' values, ascending by index.
	PCRs []pcrValue `json:"pcrs"`
}

// pcrValue is one PCR's SHA-256 value.
type pcrValue struct {
	Index  int    `json:"index"`
	Digest []byte `json:"digest"`
}

// encode marshals a message; the types above always marshal.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return b
}

// decode reads exactly one message of the current version into v,
// refusing unknown fields, trailing data and oversized input.
func decode(b []byte, v any, version func() int) error {
	if len(b) == 0 {
		return errors.New("empty")
	}
	if len(b) > maxMessage {
		return fmt.Errorf("%d bytes, at most %d allowed", len(b), maxMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("undecodable: %w", err)
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	if got := version(); got != wireVersion {
		return fmt.Errorf("version %d, this server speaks version %d", got, wireVersion)
	}
	return nil
}

func decodeEvidence(b []byte) (*evidence, error) {
	var e evidence
	if err := decode(b, &e, func() int { return e.Version }); err != nil {
		return nil, err
	}
	switch {
	case len(e.EKPublic) == 0:
		return nil, errors.New("ek_public: missing")
	case len(e.AKPublic) == 0:
		return nil, errors.New("ak_public: missing")
	}
	return &e, nil
}

func decodeChallenge(b []byte) (*challenge, error) {
	var c challenge
	if err := decode(b, &c, func() int { return c.Version }); err != nil {
		return nil, err
	}
	switch {
	case len(c.Nonce) < minNonce || len(c.Nonce) > maxNonce:
		return nil, fmt.Errorf("nonce: %d bytes, want %d to %d", len(c.Nonce), minNonce, maxNonce)
	case len(c.PCRs) == 0:
		return nil, errors.New("pcrs: none")
	case len(c.AKName) == 0:
		return nil, errors.New("ak_name: missing")
	case c.Credential != nil && (len(c.Credential.Blob) == 0 || len(c.Credential.Secret) == 0):
		return nil, errors.New("credential: blob and secret are required")
	}
	for i, idx := range c.PCRs {
		if err := CheckPCRIndex(idx); err != nil {
			return nil, fmt.Errorf("pcrs[%d]: %w", i, err)
		}
	}
	return &c, nil
}

func decodeResponse(b []byte) (*response, error) {
	var r response
	if err := decode(b, &r, func() int { return r.Version }); err != nil {
		return nil, err
	}
	switch {
	case len(r.Quote) == 0:
		return nil, errors.New("quote: missing")
	case len(r.Signature) == 0:
		return nil, errors.New("signature: missing")
	}
	return &r, nil
}

// Nonce sizes: the server sends 32 bytes; a TPM accepts qualifying data up
// to the size of its largest digest.
const (
	nonceSize = 32
	minNonce  = 16
	maxNonce  = 64
)
