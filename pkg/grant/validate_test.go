package grant

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/grantreq/grantreqtest"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

func TestRequest_BadInputIsRefusedAndStoresNothing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxTTL = 10 * time.Minute })
	cases := grantreqtest.BadRequests()
	cases = append(cases, grantreqtest.BadRequest{Name: "ttl above the server's maximum", Mod: func(r *grantv1.GrantRequest) { r.Ttl = 601 }, Want: "ttl: 601 s exceeds the maximum of 600 s"})
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			r := proto.Clone(grantreqtest.ValidRequest()).(*grantv1.GrantRequest)
			tc.Mod(r)
			_, err := h.request(r)
			if !errors.Is(err, grantreq.ErrInvalidRequest) || !strings.Contains(err.Error(), tc.Want) {
				t.Fatalf("Request = %v, want grantreq.ErrInvalidRequest containing %q", err, tc.Want)
			}
		})
	}
	if got := h.grants(); len(got) != 0 {
		t.Errorf("refused requests stored %d grants", len(got))
	}
}
