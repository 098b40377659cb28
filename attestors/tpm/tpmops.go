package tpm

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM handles of the TCG EK Credential Profile.
const (
	// ekPersistentHandle is where provisioning usually persists the RSA EK.
	ekPersistentHandle = tpm2.TPMHandle(0x81010001)
	// ekCertIndex is the NV index of the RSA-2048 EK certificate.
	ekCertIndex = tpm2.TPMHandle(0x01C00002)
	// maxEKCert bounds the certificate read from NV.
	maxEKCert = 4096
)

// tpmKey is a key loaded in the TPM.
type tpmKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	// public is the TPMT_PUBLIC exactly as the TPM returned it.
	public []byte
	// transient keys are flushed after use; persistent ones stay.
	transient bool
}

func (k tpmKey) flush(tpm transport.TPM) {
	if k.transient {
		_, _ = tpm2.FlushContext{FlushHandle: k.handle}.Execute(tpm)
	}
}

func (k tpmKey) auth(s tpm2.Session) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: s}
}

// endorsementAuth is the endorsement hierarchy with its (empty) auth value.
var endorsementAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)}

// loadEK returns the RSA EK of the standard template: the persistent one
// at 0x81010001 if it is that key, else one created from the template
// (which yields the same key, the one the EK certificate certifies).
func loadEK(tpm transport.TPM) (tpmKey, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: ekPersistentHandle}.Execute(tpm)
	if err == nil {
		if _, err := checkEK(rp.OutPublic.Bytes()); err == nil {
			return tpmKey{handle: ekPersistentHandle, name: rp.Name, public: rp.OutPublic.Bytes()}, nil
		}
	}
	resp, err := tpm2.CreatePrimary{
		PrimaryHandle: endorsementAuth,
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(tpm)
	if err != nil {
		return tpmKey{}, fmt.Errorf("create the RSA EK: %w", err)
	}
	return tpmKey{handle: resp.ObjectHandle, name: resp.Name, public: resp.OutPublic.Bytes(), transient: true}, nil
}

// createAK creates the AK as a primary key of the endorsement hierarchy.
func createAK(tpm transport.TPM, template tpm2.TPMTPublic) (tpmKey, error) {
	resp, err := tpm2.CreatePrimary{
		PrimaryHandle: endorsementAuth,
		InPublic:      tpm2.New2B(template),
	}.Execute(tpm)
	if err != nil {
		return tpmKey{}, fmt.Errorf("create the AK: %w", err)
	}
	return tpmKey{handle: resp.ObjectHandle, name: resp.Name, public: resp.OutPublic.Bytes(), transient: true}, nil
}

// readEKCert reads the RSA EK certificate from NV; nil when the TPM has
// none. Fixed-size NV areas may pad the certificate, so only the DER
// value itself is returned.
func readEKCert(tpm transport.TPM) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: ekCertIndex}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the EK certificate's NV index: %w", err)
	}
	nv, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("read the EK certificate's NV index: %w", err)
	}
	size := int(nv.DataSize)
	if size == 0 || size > maxEKCert {
		return nil, fmt.Errorf("EK certificate NV index holds %d bytes, want 1 to %d", size, maxEKCert)
	}
	chunk := nvBufferMax(tpm)
	data := make([]byte, 0, size)
	for len(data) < size {
		n := min(chunk, size-len(data))
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: ekCertIndex, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: ekCertIndex, Name: pub.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(data)),
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("read the EK certificate: %w", err)
		}
		if len(r.Data.Buffer) == 0 {
			return nil, errors.New("read the EK certificate: the TPM returned no data")
		}
		data = append(data, r.Data.Buffer...)
	}
	var v asn1.RawValue
	if _, err := asn1.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("the EK certificate NV index does not hold DER: %w", err)
	}
	return slices.Clone(v.FullBytes), nil
}

// nvBufferMax is the most the TPM returns per NV read; 512 when it does
// not say (every TPM allows at least that).
func nvBufferMax(tpm transport.TPM) int {
	const fallback = 512
	resp, err := tpm2.GetCapability{
		Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTNVBufferMax), PropertyCount: 1,
	}.Execute(tpm)
	if err != nil {
		return fallback
	}
	props, err := resp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return fallback
	}
	return max(int(min(props.TPMProperty[0].Value, maxEKCert)), 64)
}

// activate recovers the secret of a credential made for ek and bound to
// ak's name. Using the EK takes its policy: PolicySecret of the
// endorsement hierarchy, in a session made for the call.
func activate(tpm transport.TPM, ek, ak tpmKey, c *credential) ([]byte, error) {
	ekPolicy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tpm transport.TPM, session tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: endorsementAuth, PolicySession: session, NonceTPM: nonceTPM}.Execute(tpm)
		return err
	})
	resp, err := tpm2.ActivateCredential{
		ActivateHandle: ak.auth(tpm2.PasswordAuth(nil)),
		KeyHandle:      ek.auth(ekPolicy),
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: c.Blob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: c.Secret},
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("activate the credential: %w", err)
	}
	return resp.CertInfo.Buffer, nil
}

// quoteOnce quotes pcrs over nonce with ak and reads their values. A PCR
// extended between the two makes them disagree; the caller checks.
func quoteOnce(tpm transport.TPM, ak tpmKey, nonce []byte, pcrs []int) (*response, []byte, error) {
	q, err := tpm2.Quote{
		SignHandle:     ak.auth(tpm2.PasswordAuth(nil)),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      pcrSelection(pcrs),
	}.Execute(tpm)
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	attest, err := q.Quoted.Contents()
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	info, err := attest.Attested.Quote()
	if err != nil {
		return nil, nil, fmt.Errorf("quote: %w", err)
	}
	values, err := readPCRs(tpm, pcrs)
	if err != nil {
		return nil, nil, err
	}
	r := &response{Version: wireVersion, Quote: q.Quoted.Bytes(), Signature: tpm2.Marshal(q.Signature)}
	for _, idx := range pcrs {
		r.PCRs = append(r.PCRs, pcrValue{Index: idx, Digest: values[idx]})
	}
	return r, info.PCRDigest.Buffer, nil
}

// readPCRs reads the SHA-256 bank's pcrs. A TPM returns at most eight
// values per read, so it reads until every PCR is in.
func readPCRs(tpm transport.TPM, pcrs []int) (pcrValues, error) {
	out := make(pcrValues, len(pcrs))
	for len(out) < len(pcrs) {
		var todo []int
		for _, idx := range pcrs {
			if _, ok := out[idx]; !ok {
				todo = append(todo, idx)
			}
		}
		resp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(todo)}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("read PCRs: %w", err)
		}
		var got []int
		for _, s := range resp.PCRSelectionOut.PCRSelections {
			if s.Hash == tpm2.TPMAlgSHA256 {
				got = append(got, selectedIndexes(s.PCRSelect)...)
			}
		}
		if len(got) == 0 || len(got) != len(resp.PCRValues.Digests) {
			return nil, fmt.Errorf("read PCRs %v: the TPM returned %d values for PCRs %v (is the SHA-256 bank active?)", todo, len(resp.PCRValues.Digests), got)
		}
		for i, idx := range got {
			out[idx] = bytes.Clone(resp.PCRValues.Digests[i].Buffer)
		}
	}
	return out, nil
}
