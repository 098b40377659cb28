package records

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// UnmarshalWithout decodes b into m leaving out every occurrence of the
// field numbered skip: a reader that needs a record's few scalar fields
// and not its long repeated one (a reputation's events) saves decoding
// it. The other fields are copied as they are.
func UnmarshalWithout(b []byte, m proto.Message, skip protowire.Number) error {
	kept := make([]byte, 0, 64)
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return fmt.Errorf("decode %T: %w", m, protowire.ParseError(n))
		}
		v := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if v < 0 {
			return fmt.Errorf("decode %T: %w", m, protowire.ParseError(v))
		}
		if num != skip {
			kept = append(kept, rest[:n+v]...)
		}
		rest = rest[n+v:]
	}
	if err := proto.Unmarshal(kept, m); err != nil {
		return fmt.Errorf("decode %T: %w", m, err)
	}
	return nil
}
