package svid

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// PurposeOID is the object identifier of nhid's purpose attribute: the
// UUID-based arc 2.25.<uuid> of ITU-T X.667, for the UUID
// 8e78340c-3197-4780-bfc4-c0885b3c57ac (random, version 4). It is fixed
// forever: relying parties look for it.
const PurposeOID = "2.25.189374506675867224268827982299995592620"

// PurposeVersion is the version of the purpose attribute this package
// writes. Readers accept higher versions, which may only append fields.
const PurposeVersion = 1

// MaxPurposeFieldBytes bounds each text field of a purpose attribute.
// Entries allow far less (64-byte ids, 256-byte purposes and owners); the
// bound keeps a forged certificate from making readers allocate much.
const MaxPurposeFieldBytes = 1024

// oidSubjectDirectoryAttributes is the RFC 5280 §4.2.1.8 extension that
// carries the purpose attribute.
//
// The purpose attribute is not an extension of its own because Go cannot
// parse one: crypto/x509 reads every extension OID into an
// asn1.ObjectIdentifier ([]int, each arc below 2^31) and rejects the whole
// certificate ("malformed extension OID field") when an arc is larger, as
// the 128-bit arc of a 2.25 OID is. So would go-spiffe and every Go TLS
// peer. Subject directory attributes are the standard, non-critical
// container for attributes of the subject; Go leaves their content
// unparsed, so the private OID names the attribute inside it.
var oidSubjectDirectoryAttributes = asn1.ObjectIdentifier{2, 5, 29, 9}

// purposeOIDDER is the content octets of PurposeOID's DER encoding.
var purposeOIDDER = mustEncodeOID(PurposeOID)

// Purpose is what an SVID was issued for: its registration entry, the
// entry's declared purpose and the accountable human owner.
type Purpose struct {
	EntryID string
	Purpose string
	Owner   string
}

// PurposeExtension returns the non-critical certificate extension carrying
// p, for x509.Certificate.ExtraExtensions. Its DER is
//
//	SubjectDirectoryAttributes ::= SEQUENCE SIZE (1..MAX) OF Attribute
//	Attribute ::= SEQUENCE {
//	    type    OBJECT IDENTIFIER,   -- PurposeOID
//	    values  SET SIZE (1) OF NhidPurpose }
//	NhidPurpose ::= SEQUENCE {
//	    version  INTEGER,            -- PurposeVersion
//	    entryId  UTF8String,
//	    purpose  UTF8String,
//	    owner    UTF8String }
//
// EntryID is required; Purpose and Owner may be empty. Each must be valid
// UTF-8 of at most MaxPurposeFieldBytes.
func PurposeExtension(p Purpose) (pkix.Extension, error) {
	if err := p.check(); err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidSubjectDirectoryAttributes, Value: p.marshal()}, nil
}

// DER tags of the purpose attribute.
const (
	tagInteger    = 0x02
	tagOID        = 0x06
	tagUTF8String = 0x0c
	tagSequence   = 0x30
	tagSet        = 0x31
)

// marshal encodes the subject directory attributes holding p into one
// exactly sized buffer: every X.509-SVID signature pays for it, and the
// fields' bounds (check) keep every length below 2^16.
func (p Purpose) marshal() []byte {
	fields := [3]string{p.EntryID, p.Purpose, p.Owner}
	valueLen := 3 // INTEGER PurposeVersion
	for _, f := range fields {
		valueLen += tlvSize(len(f))
	}
	setLen := tlvSize(valueLen)
	attrLen := tlvSize(len(purposeOIDDER)) + tlvSize(setLen)
	b := make([]byte, 0, tlvSize(tlvSize(attrLen)))
	b = appendHeader(b, tagSequence, tlvSize(attrLen))
	b = appendHeader(b, tagSequence, attrLen)
	b = append(appendHeader(b, tagOID, len(purposeOIDDER)), purposeOIDDER...)
	b = appendHeader(b, tagSet, setLen)
	b = appendHeader(b, tagSequence, valueLen)
	b = append(b, tagInteger, 1, PurposeVersion)
	for _, f := range fields {
		b = append(appendHeader(b, tagUTF8String, len(f)), f...)
	}
	return b
}

// tlvSize is the DER size of a value of n content octets: tag, length
// octets (short form below 0x80, else 0x8k and k octets), content.
func tlvSize(n int) int {
	switch {
	case n < 0x80:
		return 2 + n
	case n <= 0xff:
		return 3 + n
	case n <= 0xffff:
		return 4 + n
	}
	return 5 + n
}

// appendHeader appends a DER tag and definite length.
func appendHeader(b []byte, tag byte, n int) []byte { return appendLength(append(b, tag), n) }

func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n <= 0xff:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return append(b, 0x82, byte(n>>8), byte(n))
	}
	return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
}

func (p Purpose) check() error {
	if p.EntryID == "" {
		return errors.New("purpose: entry id is empty")
	}
	for _, f := range []struct{ name, value string }{
		{"entry id", p.EntryID}, {"purpose", p.Purpose}, {"owner", p.Owner},
	} {
		switch {
		case len(f.value) > MaxPurposeFieldBytes:
			return fmt.Errorf("purpose: %s is %d bytes, at most %d allowed", f.name, len(f.value), MaxPurposeFieldBytes)
		case !utf8.ValidString(f.value):
			return fmt.Errorf("purpose: %s is not valid UTF-8", f.name)
		}
	}
	return nil
}

// PurposeFromCertificate reads the purpose attribute of an X.509-SVID. It
// reports false, without an error, when the certificate carries none (an
// SVID from another issuer, or from nhid before purposes existed). A
// malformed attribute, or more than one, is an error.
func PurposeFromCertificate(cert *x509.Certificate) (Purpose, bool, error) {
	if cert == nil {
		return Purpose{}, false, errors.New("purpose: no certificate")
	}
	var (
		found Purpose
		ok    bool
	)
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectDirectoryAttributes) {
			continue
		}
		p, has, err := purposeFromAttributes(ext.Value)
		if err != nil {
			return Purpose{}, false, err
		}
		if has && ok {
			return Purpose{}, false, errors.New("purpose: the certificate carries more than one purpose attribute")
		}
		if has {
			found, ok = p, true
		}
	}
	return found, ok, nil
}

// purposeFromAttributes finds the purpose attribute in the DER of a
// subject directory attributes extension, which may hold other attributes.
func purposeFromAttributes(der []byte) (Purpose, bool, error) {
	in := cryptobyte.String(der)
	var attrs cryptobyte.String
	if !in.ReadASN1(&attrs, cbasn1.SEQUENCE) || !in.Empty() {
		return Purpose{}, false, errors.New("purpose: malformed subject directory attributes")
	}
	var (
		found Purpose
		ok    bool
	)
	for !attrs.Empty() {
		var attr, oid, values cryptobyte.String
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) ||
			!attr.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return Purpose{}, false, errors.New("purpose: malformed attribute in subject directory attributes")
		}
		if string(oid) != string(purposeOIDDER) {
			continue
		}
		if ok {
			return Purpose{}, false, errors.New("purpose: the certificate carries more than one purpose attribute")
		}
		var value cryptobyte.String
		if !values.ReadASN1(&value, cbasn1.SEQUENCE) || !values.Empty() {
			return Purpose{}, false, errors.New("purpose: the purpose attribute must hold exactly one value")
		}
		p, err := parsePurposeValue(value)
		if err != nil {
			return Purpose{}, false, err
		}
		found, ok = p, true
	}
	return found, ok, nil
}

// parsePurposeValue reads the content of an NhidPurpose SEQUENCE.
func parsePurposeValue(v cryptobyte.String) (Purpose, error) {
	var version int64
	if !v.ReadASN1Int64WithTag(&version, cbasn1.INTEGER) {
		return Purpose{}, errors.New("purpose: malformed version")
	}
	if version < PurposeVersion {
		return Purpose{}, fmt.Errorf("purpose: version %d is not supported", version)
	}
	var fields [3]string
	names := [3]string{"entry id", "purpose", "owner"}
	for i := range fields {
		var s cryptobyte.String
		if !v.ReadASN1(&s, cbasn1.UTF8String) {
			return Purpose{}, fmt.Errorf("purpose: malformed %s", names[i])
		}
		if len(s) > MaxPurposeFieldBytes || !utf8.Valid(s) {
			return Purpose{}, fmt.Errorf("purpose: %s is too long or not valid UTF-8", names[i])
		}
		fields[i] = string(s)
	}
	// Later versions may append fields; version 1 has none.
	if version == PurposeVersion && !v.Empty() {
		return Purpose{}, errors.New("purpose: trailing data after the owner")
	}
	if fields[0] == "" {
		return Purpose{}, errors.New("purpose: entry id is empty")
	}
	return Purpose{EntryID: fields[0], Purpose: fields[1], Owner: fields[2]}, nil
}

// mustEncodeOID returns the DER content octets of a dotted OID whose arcs
// may exceed an int, as 2.25 arcs do (X.690 §8.19).
func mustEncodeOID(dotted string) []byte {
	var arcs []*big.Int
	start := 0
	for i := 0; i <= len(dotted); i++ {
		if i < len(dotted) && dotted[i] != '.' {
			continue
		}
		n, ok := new(big.Int).SetString(dotted[start:i], 10)
		if !ok || n.Sign() < 0 {
			panic("svid: bad OID " + dotted)
		}
		arcs, start = append(arcs, n), i+1
	}
	if len(arcs) < 2 || arcs[0].Cmp(big.NewInt(2)) > 0 {
		panic("svid: bad OID " + dotted)
	}
	first := new(big.Int).Mul(arcs[0], big.NewInt(40))
	out := appendBase128(nil, first.Add(first, arcs[1]))
	for _, a := range arcs[2:] {
		out = appendBase128(out, a)
	}
	return out
}

// appendBase128 appends n in base 128, most significant group first, the
// high bit set on every octet but the last.
func appendBase128(out []byte, n *big.Int) []byte {
	var groups []byte
	v := new(big.Int).Set(n)
	mask := big.NewInt(0x7f)
	for {
		groups = append(groups, byte(new(big.Int).And(v, mask).Uint64()))
		v.Rsh(v, 7)
		if v.Sign() == 0 {
			break
		}
	}
	for i := len(groups) - 1; i >= 0; i-- {
		g := groups[i]
		if i > 0 {
			g |= 0x80
		}
		out = append(out, g)
	}
	return out
}
