package tpm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/nhid/nhid/pkg/selector"
)

// Selector kinds, the first part of each tpm selector's value.
const (
	SelectorEKPubHash       = "ek_pubhash"
	SelectorEKCertIssuerCN  = "ek_cert_issuer_cn"
	SelectorEKCertSubjectCN = "ek_cert_subject_cn"
	SelectorPCR             = "pcr"
	SelectorPCRPolicy       = "pcr_policy"
)

// nodeSelectors describes an attested node:
//
//	tpm:ek_pubhash:<hex SHA-256 of the EK public key, PKIX DER>
//	tpm:ek_cert_issuer_cn:<CN>    when the EK was trusted by its certificate
//	tpm:ek_cert_subject_cn:<CN>   when that certificate has a subject CN
//	tpm:pcr:<index>:<hex SHA-256 value>   for each quoted PCR
//	tpm:pcr_policy:<name>         for each golden set the values match
func nodeSelectors(id ekIdentity, values pcrValues, selection []int, matched []string) []selector.Selector {
	sels := []selector.Selector{mustSelector(SelectorEKPubHash + ":" + id.ek.hash)}
	if id.cert != nil {
		// A CN that is not a valid selector value (a control character)
		// is left out rather than mangled.
		if cn := id.cert.Issuer.CommonName; cn != "" {
			if s, err := selector.New(Type, SelectorEKCertIssuerCN+":"+cn); err == nil {
				sels = append(sels, s)
			}
		}
		if cn := id.cert.Subject.CommonName; cn != "" {
			if s, err := selector.New(Type, SelectorEKCertSubjectCN+":"+cn); err == nil {
				sels = append(sels, s)
			}
		}
	}
	for _, idx := range selection {
		sels = append(sels, mustSelector(SelectorPCR+":"+strconv.Itoa(idx)+":"+hex.EncodeToString(values[idx])))
	}
	for _, name := range matched {
		sels = append(sels, mustSelector(SelectorPCRPolicy+":"+name))
	}
	return sels
}

// mustSelector builds a tpm selector from a value made of hex digits,
// digits and checked names only.
func mustSelector(value string) selector.Selector {
	s, err := selector.New(Type, value)
	if err != nil {
		panic(fmt.Sprintf("tpm selector %q: %v", value, err))
	}
	return s
}

// nodeState is what the server keeps to re-quote a node (NodeResult.State):
// the EK and its certificate, so that its trust is checked again against
// the configuration of the day, the AK bound to it, and the PCR values the
// node attested with.
type nodeState struct {
	Version  int        `json:"version"`
	EKPublic []byte     `json:"ek_public"`
	EKCert   []byte     `json:"ek_cert,omitempty"`
	AKPublic []byte     `json:"ak_public"`
	PCRs     []pcrValue `json:"pcrs"`
}

func encodeState(id ekIdentity, ak *akKey, values pcrValues, selection []int) []byte {
	st := nodeState{Version: wireVersion, EKPublic: id.ek.raw, AKPublic: ak.raw}
	if id.cert != nil {
		st.EKCert = id.cert.Raw
	}
	for _, idx := range selection {
		st.PCRs = append(st.PCRs, pcrValue{Index: idx, Digest: values[idx]})
	}
	return encode(st)
}

func decodeState(b []byte) (*nodeState, error) {
	var st nodeState
	if err := decode(b, &st, func() int { return st.Version }); err != nil {
		return nil, err
	}
	if len(st.EKPublic) == 0 || len(st.AKPublic) == 0 {
		return nil, errors.New("ek_public or ak_public missing")
	}
	return &st, nil
}

// pinned returns the PCR values the node attested with.
func (st *nodeState) pinned() pcrValues {
	out := make(pcrValues, len(st.PCRs))
	for _, v := range st.PCRs {
		out[v.Index] = v.Digest
	}
	return out
}
