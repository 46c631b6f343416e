package discovery

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/mdns"
)

// BrowseOptions narrow a Browse.
type BrowseOptions struct {
	// Interface is the interface to send queries on; empty means the
	// system's default multicast interface. (hashicorp/mdns still listens
	// for announcements on the default one.)
	Interface string
	// EdgeID, when set, accepts only the edge with this id (a paired
	// terminal looking for its own edge among several on the LAN).
	EdgeID string
	// Logger receives debug logs about ignored answers; nil means slog.Default().
	Logger *slog.Logger
}

// Found is an edge found on the LAN.
type Found struct {
	Instance string // instance name, unescaped ("Springfield Elementary")
	Host     string // mDNS host name from the SRV record
	Addr     net.IP // preferred address: IPv4 if the edge has one
	Zone     string // IPv6 zone (interface) when Addr is link-local
	Port     int
	Info     Info
	URL      string // http://addr:port
	// HTTPSURL is https://addr:port with the TXT https= port, or
	// DefaultHTTPSPort when the edge does not advertise one.
	HTTPSURL string
}

const (
	firstRound = time.Second
	maxRound   = 8 * time.Second
)

// resolveRounds returns the timeouts of the short queries whose answers
// Browse reads: a responder on the LAN answers in well under a
// millisecond, so the first is short, and the later ones cover slow links.
func resolveRounds() [3]time.Duration {
	return [3]time.Duration{2 * time.Millisecond, 20 * time.Millisecond, 200 * time.Millisecond}
}

// Browse returns the first valid edge that answers, querying until ctx is
// done; it then returns an error wrapping ctx's error. Answers whose TXT
// record does not parse (ParseTXT) are ignored.
//
// All queries go through hashicorp/mdns's QueryContext. Two properties of
// that client shape this function:
//
//   - It hands over a *ServiceEntry and keeps writing to it when more
//     records for the same name arrive (a data race the race detector
//     reports, and torn strings or slices in principle). So Browse reads an
//     entry's fields only after the QueryContext call that produced it has
//     returned, from short calls (resolveRounds).
//   - Its query loop runs until its own timeout even after cancellation.
//     So waiting for an edge that is not there yet uses long calls (1 s,
//     2 s, 4 s, then 8 s, spacing the repeated queries as RFC 6762 section
//     5.2 asks), which also hear announcements; an entry from a long call
//     is only a signal, read for its Name alone (which the library never
//     rewrites), and a short call then resolves it. Browse does not wait
//     for a long call to end: cancellation closes its sockets and its
//     goroutine ends by its timeout.
func Browse(ctx context.Context, opts BrowseOptions) (Found, error) {
	b := &browser{opts: opts, log: opts.Logger}
	if b.log == nil {
		b.log = slog.Default()
	}
	if opts.Interface != "" {
		ifi, err := net.InterfaceByName(opts.Interface)
		if err != nil {
			return Found{}, fmt.Errorf("discovery: browse on %q: %w", opts.Interface, err)
		}
		b.ifi = ifi
	}
	b.libLog = slog.NewLogLogger(b.log.With("via", "hashicorp/mdns").Handler(), slog.LevelDebug)

	// An edge that is already up answers the first short query.
	if f, ok, err := b.resolve(ctx); ok || err != nil {
		return f, err
	}
	round := firstRound
	for ctx.Err() == nil {
		if f, ok, err := b.listen(ctx, round); ok || err != nil {
			return f, err
		}
		round = min(2*round, maxRound)
	}
	return Found{}, fmt.Errorf("discovery: no %s edge answered: %w", ServiceType, context.Cause(ctx))
}

type browser struct {
	opts   BrowseOptions
	log    *slog.Logger
	libLog *log.Logger
	ifi    *net.Interface
	// noV4 and noV6 drop an address family whose sends fail (see
	// queryFailed).
	noV4, noV6 bool
}

// queryFailed decides what a failed mDNS query means. hashicorp/mdns gives
// up on a whole query when a send on one address family fails, after it may
// already have sent on the other. That happens on a healthy LAN: at boot a
// terminal's IPv6 link-local address is still in duplicate address
// detection for a second or two ("sendto: cannot assign requested
// address"), and a network without IPv6 has no route to ff02::fb. So the
// failing family is dropped for the rest of this Browse and the query is
// retried at once on the other; only when both have failed is the error
// the caller's.
func (b *browser) queryFailed(err error) (retry bool, fatal error) {
	var op *net.OpError
	fam := ""
	if errors.As(err, &op) {
		fam = op.Net
	}
	switch {
	case fam == "udp6" && !b.noV6 && !b.noV4:
		b.noV6 = true
	case fam == "udp4" && !b.noV4 && !b.noV6:
		b.noV4 = true
	default:
		return false, fmt.Errorf("discovery: mDNS query: %w", err)
	}
	b.log.Debug("mDNS query failed on one address family; browsing on the other", "err", err)
	return true, nil
}

func (b *browser) params(timeout time.Duration, entries chan *mdns.ServiceEntry) *mdns.QueryParam {
	return &mdns.QueryParam{
		Service:   ServiceType,
		Domain:    "local",
		Timeout:   timeout,
		Interface: b.ifi,
		Entries:   entries, // buffered: the library drops entries it cannot send at once
		Logger:    b.libLog,

		DisableIPv4: b.noV4,
		DisableIPv6: b.noV6,
	}
}

// remaining caps d by ctx's deadline; false when the deadline has passed.
func remaining(ctx context.Context, d time.Duration) (time.Duration, bool) {
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return d, d > 0 && ctx.Err() == nil
}

// resolve runs the short queries of resolveRounds until one returns a valid
// edge. The entries are read only after QueryContext has returned.
func (b *browser) resolve(ctx context.Context) (Found, bool, error) {
	rounds := resolveRounds()
	for i := 0; i < len(rounds); i++ {
		d, ok := remaining(ctx, rounds[i])
		if !ok {
			return Found{}, false, nil
		}
		entries := make(chan *mdns.ServiceEntry, 32)
		if err := mdns.QueryContext(ctx, b.params(d, entries)); err != nil && ctx.Err() == nil {
			retry, fatal := b.queryFailed(err)
			if fatal != nil {
				return Found{}, false, fatal
			}
			if retry {
				i-- // the same round again, on the family that works
				continue
			}
		}
		for {
			select {
			case e := <-entries:
				if f, ok := accept(e, b.opts.EdgeID, b.log); ok {
					return f, true, nil
				}
				continue
			default:
			}
			break
		}
	}
	return Found{}, false, nil
}

// listen runs one long query, and resolves as soon as it hears of an edge.
func (b *browser) listen(ctx context.Context, round time.Duration) (Found, bool, error) {
	d, ok := remaining(ctx, round)
	if !ok {
		<-ctx.Done() // the deadline is due; let ctx say so
		return Found{}, false, nil
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel() // closes the long query's sockets
	entries := make(chan *mdns.ServiceEntry, 32)
	done := make(chan error, 1)
	params := b.params(d, entries)
	go func() { done <- mdns.QueryContext(rctx, params) }()
	tried := make(map[string]bool)
	for {
		select {
		case e := <-entries:
			name := e.Name // the only field safe to read now
			if _, ours := instanceOf(name); !ours || tried[name] {
				continue
			}
			tried[name] = true // once per round, so a bad edge cannot make us spin
			if f, ok, err := b.resolve(ctx); ok || err != nil {
				return f, ok, err
			}
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				if _, fatal := b.queryFailed(err); fatal != nil {
					return Found{}, false, fatal
				}
				// The caller runs the next round at once, without the
				// failed family.
			}
			return Found{}, false, nil
		case <-ctx.Done():
			return Found{}, false, nil
		}
	}
}

// accept turns a library entry into a Found, if it is a valid edge.
func accept(e *mdns.ServiceEntry, wantID string, log *slog.Logger) (Found, bool) {
	if e == nil {
		return Found{}, false
	}
	inst, ok := instanceOf(e.Name)
	if !ok {
		log.Debug("ignoring mDNS entry of another service", "name", e.Name)
		return Found{}, false
	}
	info, err := ParseTXT(e.InfoFields)
	if err != nil {
		log.Debug("ignoring edge with bad TXT record", "name", e.Name, "err", err)
		return Found{}, false
	}
	if wantID != "" && info.EdgeID != wantID {
		log.Debug("ignoring another edge", "name", e.Name, "edge_id", info.EdgeID, "want", wantID)
		return Found{}, false
	}
	if e.Port < 1 || e.Port > 65535 {
		log.Debug("ignoring edge with bad port", "name", e.Name, "port", e.Port)
		return Found{}, false
	}
	var ip net.IP
	zone := ""
	switch {
	case e.AddrV4 != nil && e.AddrV4.To4() != nil:
		ip = e.AddrV4.To4()
	case e.AddrV6IPAddr != nil && e.AddrV6IPAddr.IP.To16() != nil:
		ip, zone = e.AddrV6IPAddr.IP, e.AddrV6IPAddr.Zone
	default:
		log.Debug("ignoring edge without address", "name", e.Name)
		return Found{}, false
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		log.Debug("ignoring edge with unusable address", "name", e.Name, "addr", ip)
		return Found{}, false
	}
	return newFound(inst, e.Host, ip, zone, e.Port, info), true
}

// newFound builds a Found with its URLs.
func newFound(inst, host string, ip net.IP, zone string, port int, info Info) Found {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	f := Found{Instance: inst, Host: host, Addr: ip, Zone: zone, Port: port, Info: info}
	h := f.Addr.String()
	if f.Zone != "" {
		h += "%" + f.Zone
	}
	f.URL = (&url.URL{Scheme: "http", Host: net.JoinHostPort(h, strconv.Itoa(f.Port))}).String()
	httpsPort := info.HTTPSPort
	if httpsPort == 0 {
		httpsPort = DefaultHTTPSPort
	}
	f.HTTPSURL = (&url.URL{Scheme: "https", Host: net.JoinHostPort(h, strconv.Itoa(httpsPort))}).String()
	return f
}
