package bgp

import (
	"fmt"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// apiPath builds GoBGP's path for r: origin IGP, the family's next hop,
// and the attributes that are set.
func (s *Speaker) apiPath(r Route) (*api.Path, error) {
	addr := r.Prefix.Addr()
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: addr.String(), PrefixLen: uint32(r.Prefix.Bits())})
	if err != nil {
		return nil, fmt.Errorf("encode prefix: %w", err)
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}}
	family := familyV4
	if addr.Is4() {
		nh := "0.0.0.0" // GoBGP puts in the session's own address
		if s.cfg.NextHop.IsValid() {
			nh = s.cfg.NextHop.String()
		}
		attrs = append(attrs, &api.NextHopAttribute{NextHop: nh})
	} else {
		family = familyV6
		nh := "::"
		if s.cfg.NextHop6.IsValid() {
			nh = s.cfg.NextHop6.String()
		}
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: familyV6, NextHops: []string{nh}, Nlris: []*anypb.Any{nlri}})
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, &api.CommunitiesAttribute{Communities: r.Communities})
	}
	if r.MED != nil {
		attrs = append(attrs, &api.MultiExitDiscAttribute{Med: *r.MED})
	}
	if r.LocalPref != nil {
		attrs = append(attrs, &api.LocalPrefAttribute{LocalPref: *r.LocalPref})
	}
	pattrs := make([]*anypb.Any, len(attrs))
	for i, a := range attrs {
		if pattrs[i], err = anypb.New(a); err != nil {
			return nil, fmt.Errorf("encode path attribute: %w", err)
		}
	}
	return &api.Path{Family: family, Nlri: nlri, Pattrs: pattrs}, nil
}
