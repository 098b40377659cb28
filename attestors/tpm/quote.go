package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Refusal reasons of the quote, so callers and tests can tell them apart.
var (
	errQuoteMagic     = errors.New("quote is not TPM-generated: magic is not TPM_GENERATED_VALUE")
	errQuoteType      = errors.New("attestation is not a quote: type is not TPM_ST_ATTEST_QUOTE")
	errQuoteSignature = errors.New("quote signature does not verify with the AK")
	errQuoteNonce     = errors.New("quote nonce does not match this challenge's (stale or replayed quote)")
	errQuoteSelection = errors.New("quote does not cover exactly the requested PCRs")
	errPCRDigest      = errors.New("reported PCR values do not match the quoted PCR digest")
)

// verifyQuote checks a quote answers the challenge: the AK signed it, it
// is a TPM-generated quote, its extraData is the nonce, it covers exactly
// the selection of the SHA-256 bank, and the reported values hash to its
// PCR digest. It returns the values, now proven.
func verifyQuote(ak *akKey, nonce []byte, selection []int, r *response) (pcrValues, error) {
	q := r.Quote
	switch {
	case len(q) < 6 || binary.BigEndian.Uint32(q) != uint32(tpm2.TPMGeneratedValue):
		return nil, errQuoteMagic
	case binary.BigEndian.Uint16(q[4:]) != uint16(tpm2.TPMSTAttestQuote):
		return nil, errQuoteType
	}
	if err := verifySignature(ak, q, r.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", errQuoteSignature, err)
	}
	attest, err := parseAttest(q)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(attest.ExtraData.Buffer, nonce) != 1 {
		return nil, errQuoteNonce
	}
	info, err := attest.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("quote info: %w", err)
	}
	if err := checkSelection(info.PCRSelect, selection); err != nil {
		return nil, fmt.Errorf("%w: %v", errQuoteSelection, err)
	}
	values, err := reportedValues(r.PCRs, selection)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pcrDigest(values, selection), info.PCRDigest.Buffer) {
		return nil, errPCRDigest
	}
	return values, nil
}

// parseAttest decodes a signed TPMS_ATTEST, which must be canonical.
func parseAttest(b []byte) (a *tpm2.TPMSAttest, err error) {
	defer func() {
		if r := recover(); r != nil {
			a, err = nil, fmt.Errorf("undecodable quote: %v", r)
		}
	}()
	a, err = tpm2.Unmarshal[tpm2.TPMSAttest](b)
	if err != nil {
		return nil, fmt.Errorf("undecodable quote: %w", err)
	}
	if !bytes.Equal(tpm2.Marshal(a), b) {
		return nil, errors.New("quote is not canonically encoded or has trailing bytes")
	}
	return a, nil
}

// verifySignature checks sig (a TPMT_SIGNATURE) over data with the AK's
// own scheme and SHA-256.
func verifySignature(ak *akKey, data, raw []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable signature: %v", r)
		}
	}()
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](raw)
	if err != nil {
		return fmt.Errorf("undecodable signature: %w", err)
	}
	if !bytes.Equal(tpm2.Marshal(sig), raw) {
		return errors.New("signature is not canonically encoded or has trailing bytes")
	}
	if sig.SigAlg != ak.sigAlg {
		return fmt.Errorf("signature scheme %v, the AK's is %v", sig.SigAlg, ak.sigAlg)
	}
	digest := sha256.Sum256(data)
	switch key := ak.key.(type) {
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil || s.Hash != tpm2.TPMAlgSHA256 {
			return errors.New("not an RSASSA SHA-256 signature")
		}
		return rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], s.Sig.Buffer)
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil || s.Hash != tpm2.TPMAlgSHA256 {
			return errors.New("not an ECDSA SHA-256 signature")
		}
		r, sv := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(key, digest[:], r, sv) {
			return errors.New("ECDSA verification failed")
		}
		return nil
	}
	return fmt.Errorf("unsupported AK key %T", ak.key)
}

// checkSelection requires the quote's selection to be exactly the SHA-256
// bank's PCRs in want.
func checkSelection(got tpm2.TPMLPCRSelection, want []int) error {
	var quoted []int
	for _, s := range got.PCRSelections {
		idx := selectedIndexes(s.PCRSelect)
		if len(idx) == 0 {
			continue
		}
		if s.Hash != tpm2.TPMAlgSHA256 {
			return fmt.Errorf("quotes PCRs %v of bank %v; only SHA-256 is requested", idx, s.Hash)
		}
		quoted = append(quoted, idx...)
	}
	slices.Sort(quoted)
	if !slices.Equal(quoted, want) {
		return fmt.Errorf("quotes SHA-256 PCRs %v, want %v", quoted, want)
	}
	return nil
}

// selectedIndexes decodes a PCR bitmap: bit i of byte j selects PCR 8j+i.
func selectedIndexes(bitmap []byte) []int {
	var out []int
	for j, b := range bitmap {
		for i := range 8 {
			if b&(1<<i) != 0 {
				out = append(out, 8*j+i)
			}
		}
	}
	return out
}

// pcrSelection is the TPML_PCR_SELECTION of the SHA-256 bank's indexes.
func pcrSelection(indexes []int) tpm2.TPMLPCRSelection {
	pcrs := make([]uint, len(indexes))
	for i, idx := range indexes {
		pcrs[i] = uint(idx)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...),
	}}}
}

// reportedValues checks the agent reported exactly the selected PCRs, in
// ascending order, each a SHA-256 value.
func reportedValues(reported []pcrValue, selection []int) (pcrValues, error) {
	if len(reported) != len(selection) {
		return nil, fmt.Errorf("pcrs: %d values reported, %d PCRs quoted", len(reported), len(selection))
	}
	values := make(pcrValues, len(reported))
	for i, v := range reported {
		if v.Index != selection[i] {
			return nil, fmt.Errorf("pcrs[%d]: PCR %d, want PCR %d", i, v.Index, selection[i])
		}
		if len(v.Digest) != sha256.Size {
			return nil, fmt.Errorf("pcrs[%d]: %d bytes, want a SHA-256 value", i, len(v.Digest))
		}
		values[v.Index] = v.Digest
	}
	return values, nil
}

// pcrDigest is the quote's PCR digest of values: the SHA-256 of the
// selected PCRs' values concatenated in ascending index order.
func pcrDigest(values pcrValues, selection []int) []byte {
	h := sha256.New()
	for _, idx := range selection {
		h.Write(values[idx])
	}
	return h.Sum(nil)
}
