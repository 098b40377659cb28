package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Kinds of JSON lines.
const (
	KindRecord     = "record"
	KindCheckpoint = "checkpoint"
	KindHead       = "head"
)

// Head is the seq and hash of a chain's newest record.
type Head struct {
	Seq  uint64
	Hash []byte
}

// Line is one JSON line of an export or of the sink: exactly one of its
// fields is set. docs/audit.md has the format; it carries every field
// exactly, so that a verifier recomputes the same hashes from it.
type Line struct {
	Record     *typesv1.AuditRecord
	Checkpoint *typesv1.AuditCheckpoint
	Head       *Head
}

// hexBytes is a byte string written as lowercase hex.
type hexBytes []byte

func (h hexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*h = v
	return nil
}

type recordLine struct {
	Kind       string          `json:"kind"`
	Seq        uint64          `json:"seq"`
	Time       string          `json:"time"`
	Server     string          `json:"server"`
	Actor      string          `json:"actor"`
	OnBehalfOf string          `json:"on_behalf_of"`
	Action     string          `json:"action"`
	Target     string          `json:"target"`
	Outcome    string          `json:"outcome"`
	Reason     string          `json:"reason"`
	Details    json.RawMessage `json:"details"`
	PrevHash   hexBytes        `json:"prev_hash"`
	Hash       hexBytes        `json:"hash"`
}

type checkpointLine struct {
	Kind      string   `json:"kind"`
	Seq       uint64   `json:"seq"`
	HeadHash  hexBytes `json:"head_hash"`
	Time      string   `json:"time"`
	KeyID     string   `json:"key_id"`
	PublicKey []byte   `json:"public_key"`
	Signature []byte   `json:"signature"`
	Server    string   `json:"server"`
}

type headLine struct {
	Kind string   `json:"kind"`
	Seq  uint64   `json:"seq"`
	Hash hexBytes `json:"hash"`
}

// FormatTime writes unix nanoseconds as RFC 3339 in UTC with as many
// fraction digits as needed; ParseTime reads it back exactly.
func FormatTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// ParseTime reads a time FormatTime wrote, as unix nanoseconds.
func ParseTime(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixNano(), nil
}

// detailsJSON embeds details as a JSON object when that reads back to the
// same bytes (a compact object), else as a string.
func detailsJSON(d string) json.RawMessage {
	if len(d) > 0 && d[0] == '{' && json.Valid([]byte(d)) {
		var buf bytes.Buffer
		if json.Compact(&buf, []byte(d)) == nil && buf.String() == d {
			return json.RawMessage(d)
		}
	}
	b, _ := json.Marshal(d) // a string always encodes
	return b
}

// detailsFrom reverses detailsJSON.
func detailsFrom(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return "", nil
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] == '{':
		var buf bytes.Buffer
		err := json.Compact(&buf, raw)
		return buf.String(), err
	}
	return "", errors.New("details: neither an object nor a string")
}

// MarshalLine encodes l as one JSON line, newline included. HTML
// characters are not escaped: the bytes are the record's.
func MarshalLine(l Line) ([]byte, error) {
	var v any
	switch {
	case l.Record != nil:
		r := l.Record
		v = recordLine{
			Kind: KindRecord, Seq: r.GetSeq(), Time: FormatTime(r.GetTime()), Server: r.GetServer(),
			Actor: r.GetActor(), OnBehalfOf: r.GetOnBehalfOf(), Action: r.GetAction(), Target: r.GetTarget(),
			Outcome: r.GetOutcome(), Reason: r.GetReason(), Details: detailsJSON(r.GetDetails()),
			PrevHash: r.GetPrevHash(), Hash: r.GetHash(),
		}
	case l.Checkpoint != nil:
		c := l.Checkpoint
		v = checkpointLine{
			Kind: KindCheckpoint, Seq: c.GetSeq(), HeadHash: c.GetHeadHash(), Time: FormatTime(c.GetTime()),
			KeyID: c.GetKeyId(), PublicKey: c.GetPublicKey(), Signature: c.GetSignature(), Server: c.GetServer(),
		}
	case l.Head != nil:
		v = headLine{Kind: KindHead, Seq: l.Head.Seq, Hash: l.Head.Hash}
	default:
		return nil, errors.New("encode audit line: empty line")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode audit line: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalLine decodes one JSON line MarshalLine wrote (or the same
// object re-indented). Unknown fields are refused.
func UnmarshalLine(b []byte) (Line, error) {
	var k struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return Line{}, err
	}
	switch k.Kind {
	case KindRecord:
		var r recordLine
		if err := strictUnmarshal(b, &r); err != nil {
			return Line{}, err
		}
		t, err := ParseTime(r.Time)
		if err != nil {
			return Line{}, fmt.Errorf("time: %w", err)
		}
		details, err := detailsFrom(r.Details)
		if err != nil {
			return Line{}, err
		}
		return Line{Record: &typesv1.AuditRecord{
			Seq: r.Seq, Time: t, Server: r.Server, Actor: r.Actor, OnBehalfOf: r.OnBehalfOf, Action: r.Action,
			Target: r.Target, Outcome: r.Outcome, Reason: r.Reason, Details: details, PrevHash: r.PrevHash, Hash: r.Hash,
		}}, nil
	case KindCheckpoint:
		var c checkpointLine
		if err := strictUnmarshal(b, &c); err != nil {
			return Line{}, err
		}
		t, err := ParseTime(c.Time)
		if err != nil {
			return Line{}, fmt.Errorf("time: %w", err)
		}
		return Line{Checkpoint: &typesv1.AuditCheckpoint{
			Seq: c.Seq, HeadHash: c.HeadHash, Time: t, KeyId: c.KeyID, PublicKey: c.PublicKey, Signature: c.Signature, Server: c.Server,
		}}, nil
	case KindHead:
		var h headLine
		if err := strictUnmarshal(b, &h); err != nil {
			return Line{}, err
		}
		return Line{Head: &Head{Seq: h.Seq, Hash: h.Hash}}, nil
	}
	return Line{}, fmt.Errorf("kind %q is not one of %s, %s, %s", k.Kind, KindRecord, KindCheckpoint, KindHead)
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}
