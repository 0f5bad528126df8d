package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/bgp"
)

// newBGPSpeakerCmd runs internal/bgp's Speaker on its own, standing in for
// halb's BGP mode in the lab until the daemon announces by itself.
func newBGPSpeakerCmd(log *slog.Logger) *cobra.Command {
	var (
		asn, peerASN  uint32
		routerID      string
		peer, nextHop string
		hold          time.Duration
		announce      []string
	)
	cmd := &cobra.Command{
		Use:   "bgp-speaker --asn N --router-id IP --peer IP --peer-asn N --announce PREFIX",
		Short: "Announce prefixes to one BGP peer with halb's speaker",
		Long: `bgp-speaker dials one BGP peer and announces the given host prefixes with
the node's address as next hop, until it is stopped.

  SIGUSR1  withdraws every prefix (the session stays up)
  SIGUSR2  announces them again
  SIGTERM  withdraws, closes the session and exits
  SIGKILL  a crash: the peer sees the session close`,
		Example: `  ip netns exec hl01-lb1 halb-lab bgp-speaker --asn 64512 --router-id 192.168.66.151 \
      --peer 192.168.66.1 --peer-asn 64500 --announce 192.168.70.160/32`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := netip.ParseAddr(routerID)
			if err != nil {
				return fmt.Errorf("--router-id: %w", err)
			}
			pa, err := netip.ParseAddr(peer)
			if err != nil {
				return fmt.Errorf("--peer: %w", err)
			}
			nh := id
			if nextHop != "" {
				if nh, err = netip.ParseAddr(nextHop); err != nil {
					return fmt.Errorf("--next-hop: %w", err)
				}
			}
			var routes []bgp.Route
			for _, a := range announce {
				p, err := netip.ParsePrefix(a)
				if err != nil {
					return fmt.Errorf("--announce: %w", err)
				}
				routes = append(routes, bgp.Route{Prefix: p})
			}
			if len(routes) == 0 {
				return errors.New("nothing to announce: pass --announce PREFIX")
			}
			cfg := bgp.Config{LocalASN: asn, RouterID: id, Peers: []bgp.Peer{{Address: pa, ASN: peerASN, HoldTime: hold}}}
			if nh.Is4() {
				cfg.NextHop = nh
			} else {
				cfg.NextHop6 = nh
			}
			s, err := bgp.New(cfg, log)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if err := s.Announce(r); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			go toggle(ctx, s, routes, log)
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&asn, "asn", 64512, "local ASN")
	f.StringVar(&routerID, "router-id", "", "router id, also the next hop unless --next-hop")
	f.StringVar(&nextHop, "next-hop", "", "next hop of the routes (default: the router id)")
	f.StringVar(&peer, "peer", "", "the peer's address")
	f.Uint32Var(&peerASN, "peer-asn", 64500, "the peer's ASN")
	f.DurationVar(&hold, "hold", bgp.DefaultHoldTime, "hold time (whole seconds, at least 3s)")
	f.StringArrayVar(&announce, "announce", nil, "host prefix to announce (repeatable)")
	_ = cmd.MarkFlagRequired("router-id")
	_ = cmd.MarkFlagRequired("peer")
	return cmd
}

// toggle withdraws the routes on SIGUSR1 and announces them on SIGUSR2,
// so a test can take a node out of the ECMP set without killing it.
func toggle(ctx context.Context, s *bgp.Speaker, routes []bgp.Route, log *slog.Logger) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			for _, r := range routes {
				var err error
				if sig == syscall.SIGUSR1 {
					err = s.Withdraw(r.Prefix)
				} else {
					err = s.Announce(r)
				}
				if err != nil {
					log.Error("bgp-speaker", "signal", sig, "err", err)
				}
			}
		}
	}
}
