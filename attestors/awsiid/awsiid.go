// Package awsiid is the AWS EC2 instance identity document node attestor,
// "aws_iid". The agent reads its instance's identity document and the
// document's RSA signature from the instance metadata service (IMDSv2).
// The server verifies the signature with AWS's public "RSA" certificates,
// which the operator configures (the server needs no network access and no
// AWS credentials), checks the account (and optionally the region and the
// instance's age), and admits the node as
//
//	spiffe://<td>/nhid/agent/aws_iid/<account>/<region>/<instance-id>
//
// with these selectors (type "aws_iid"):
//
//	account:<id>  region:<region>  az:<zone>  instance_id:<id>
//	image_id:<ami>  instance_type:<type>
//
// An identity document is the same at every attestation and readable by
// every process of the instance that can reach IMDS: whoever copies it can
// present it again. The result is therefore trust-on-first-use: the server
// admits an agent ID only while no node of that ID exists or an operator
// evicted it (pkg/attestor.NodeResult.TrustOnFirstUse).
//
// Of the three signatures AWS publishes, this attestor uses the
// base64-encoded one (/latest/dynamic/instance-identity/signature): RSA
// PKCS #1 v1.5 over the SHA-256 of the document bytes, verified with the
// region's "RSA" certificate. It needs only the standard library, unlike
// the PKCS #7 variants (the SHA-1/DSA "pkcs7" and the "rsa2048" SignedData).
package awsiid

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/nhid/nhid/pkg/attestor"
)

// Type is the attestor type and selector type, "aws_iid".
const Type = "aws_iid"

// Bounds of the evidence, checked before anything is decoded. Real
// documents are under 1 KiB and signatures 128 to 256 bytes.
const (
	maxDocument  = 8 << 10
	maxSignature = 512 // an RSA-4096 signature
	maxPayload   = 16 << 10
)

// payload is the evidence the agent sends. The document is carried as
// bytes (base64 in JSON) so that it reaches the server exactly as IMDS
// served it: the signature covers those bytes.
type payload struct {
	Document  []byte `json:"document"`
	Signature []byte `json:"signature"`
}

func encodePayload(p payload) ([]byte, error) { return json.Marshal(p) }

// decodePayload decodes and bounds evidence: one JSON object with exactly
// the known fields.
func decodePayload(data []byte) (payload, error) {
	var p payload
	if err := attestor.DecodePayload(data, maxPayload, &p); err != nil {
		return payload{}, err
	}
	switch {
	case len(p.Document) == 0:
		return payload{}, errors.New("document is empty")
	case len(p.Document) > maxDocument:
		return payload{}, fmt.Errorf("document is %d bytes, more than %d", len(p.Document), maxDocument)
	case len(p.Signature) == 0:
		return payload{}, errors.New("signature is empty")
	case len(p.Signature) > maxSignature:
		return payload{}, fmt.Errorf("signature is %d bytes, more than %d", len(p.Signature), maxSignature)
	}
	return p, nil
}

// decodeSignature decodes the signature as IMDS serves it: standard
// base64, which IMDS breaks into lines.
func decodeSignature(text []byte) ([]byte, error) {
	compact := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, text)
	sig, err := base64.StdEncoding.DecodeString(string(compact))
	if err != nil {
		return nil, fmt.Errorf("signature is not base64: %w", err)
	}
	if len(sig) == 0 || len(sig) > maxSignature {
		return nil, fmt.Errorf("signature is %d bytes, want 1 to %d", len(sig), maxSignature)
	}
	return sig, nil
}

// document holds the fields of an instance identity document the
// attestor reads; AWS adds others (billingProducts, version, ...), which
// are ignored.
type document struct {
	AccountID        string `json:"accountId"`
	Architecture     string `json:"architecture"`
	AvailabilityZone string `json:"availabilityZone"`
	ImageID          string `json:"imageId"`
	InstanceID       string `json:"instanceId"`
	InstanceType     string `json:"instanceType"`
	PendingTime      string `json:"pendingTime"`
	PrivateIP        string `json:"privateIp"`
	Region           string `json:"region"`
}

var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$`)
	instanceRE = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	// The fields below only become selector values: they are held to
	// plain characters, not to AWS's current formats, so that a new
	// instance family or zone kind does not lock nodes out.
	imageRE = regexp.MustCompile(`^ami-[0-9a-f]{8,32}$`)
	plainRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// CheckAccountID reports whether id is an AWS account ID: 12 digits.
func CheckAccountID(id string) error {
	if !accountRE.MatchString(id) {
		return fmt.Errorf("account %q: must be an AWS account ID of 12 digits", id)
	}
	return nil
}

// CheckRegion reports whether name looks like an AWS region code
// (us-east-1, eu-central-2, us-gov-west-1).
func CheckRegion(name string) error {
	if !regionRE.MatchString(name) {
		return fmt.Errorf("region %q: must be an AWS region code such as us-east-1", name)
	}
	return nil
}

// parseDocument decodes a verified document and checks the fields that
// form the agent ID; the others are checked when selectors are built.
func parseDocument(data []byte) (document, error) {
	var d document
	if err := json.Unmarshal(data, &d); err != nil {
		return document{}, fmt.Errorf("decode document: %w", err)
	}
	if err := CheckAccountID(d.AccountID); err != nil {
		return document{}, fmt.Errorf("document accountId: %w", err)
	}
	if err := CheckRegion(d.Region); err != nil {
		return document{}, fmt.Errorf("document region: %w", err)
	}
	if !instanceRE.MatchString(d.InstanceID) {
		return document{}, fmt.Errorf("document instanceId %q: must be i- and 8 or 17 hex digits", d.InstanceID)
	}
	return d, nil
}
