package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// RegisterConfig says what the edge keeps in the school's DNS zone.
type RegisterConfig struct {
	// Zone is the school's zone, fully qualified ("school.example.").
	Zone string
	// Server is the zone's primary server that takes updates (host or
	// host:port); empty means manual mode: no updates are sent and the
	// console shows the records to add by hand.
	Server string
	// Key signs the updates (TSIG); required with Server.
	Key *TSIGKey
	// Instance is the DNS-SD instance name (InstanceName of the school).
	Instance string
	// HostLabel is the label of the address records in the zone;
	// empty means WellKnownHost.
	HostLabel string
	// Port is the edge's HTTP port; Info goes into the TXT record.
	Port int
	Info Info
	// Addrs lists the addresses to publish (called every Poll); loopback,
	// link-local and unspecified addresses are dropped.
	Addrs func() ([]netip.Addr, error)
	// Poll is how often Addrs is checked (0: 2 s), Confirm how often the
	// records are read back from the server (0: 60 s), TTL the records'
	// TTL (0: 30 s; short, so that an address change reaches resolvers'
	// caches quickly).
	Poll, Confirm, TTL time.Duration
	// Timeout bounds one exchange with the server (0: 5 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// DNSStatus is the registration's state, for the console.
type DNSStatus struct {
	Zone   string `json:"zone"`
	Server string `json:"server,omitempty"`
	// Mode is "dynamic_update" (RFC 2136 with TSIG) or "manual".
	Mode    string `json:"mode"`
	KeyName string `json:"key_name,omitempty"`
	// Instance is the DNS-SD instance name as people read it (in Records
	// it is escaped as zone files write it).
	Instance string   `json:"instance"`
	Host     string   `json:"host"`
	Addrs    []string `json:"addrs"`
	// Records are the records published (or, in manual mode, to add).
	Records       []string   `json:"records"`
	LastUpdate    *time.Time `json:"last_update,omitempty"`
	LastConfirmed *time.Time `json:"last_confirmed,omitempty"`
	// Error is the last failure, for an operator, and when it happened.
	Error          string     `json:"error,omitempty"`
	ErrorAt        *time.Time `json:"error_at,omitempty"`
	ZoneSnippet    string     `json:"zone_snippet"`
	DnsmasqSnippet string     `json:"dnsmasq_snippet"`
}

// Registrar keeps the edge's records in the school's zone until Close.
type Registrar struct {
	cfg    RegisterConfig
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	client *dns.Client

	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	pub       Publication // what the zone should hold now
	published bool        // pub is in the zone (last update succeeded)
	lastUpd   time.Time
	lastConf  time.Time
	errMsg    string
	errAt     time.Time
}

// Register validates cfg, makes the first update (in the background: a
// DNS server that is down must not hold up the edge) and keeps the records
// current until Close or until ctx is done.
func Register(ctx context.Context, cfg RegisterConfig) (*Registrar, error) {
	if cfg.HostLabel == "" {
		cfg.HostLabel = WellKnownHost
	}
	cfg.Poll = orDur(cfg.Poll, 2*time.Second)
	cfg.Confirm = orDur(cfg.Confirm, time.Minute)
	cfg.TTL = orDur(cfg.TTL, 30*time.Second)
	cfg.Timeout = orDur(cfg.Timeout, 5*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Zone = strings.ToLower(dns.Fqdn(cfg.Zone))
	if cfg.Info.Version == "" {
		cfg.Info.Version = txtVersion
	}
	if cfg.Info.API == "" {
		cfg.Info.API = defaultAPI
	}
	pub := Publication{Zone: cfg.Zone, Instance: cfg.Instance, Host: cfg.HostLabel + "." + cfg.Zone, Port: cfg.Port, Info: cfg.Info, TTL: uint32(cfg.TTL / time.Second)}
	if err := pub.check(); err != nil {
		return nil, fmt.Errorf("discovery: DNS registration: %w", err)
	}
	if cfg.Server != "" {
		if cfg.Key == nil {
			return nil, errors.New("discovery: -dns-server needs -dns-tsig-key-file: the school's DNS must only take signed updates")
		}
		cfg.Server = hostPort(cfg.Server)
	}
	if cfg.Addrs == nil {
		return nil, errors.New("discovery: DNS registration needs an address source")
	}
	r := &Registrar{cfg: cfg, log: cfg.Logger, done: make(chan struct{}), pub: pub}
	if cfg.Key != nil {
		r.client = &dns.Client{Net: "tcp", Timeout: cfg.Timeout, TsigSecret: map[string]string{cfg.Key.Name: cfg.Key.Secret}}
	}
	r.pub.Addrs, _ = r.addrs()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.run(runCtx)
	context.AfterFunc(ctx, func() { _ = r.Close() })
	return r, nil
}

func orDur(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// addrs are the addresses to publish, sorted; loopback, link-local and
// unspecified ones mean nothing to a terminal on another segment.
func (r *Registrar) addrs() ([]netip.Addr, error) {
	as, err := r.cfg.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range as {
		a = a.Unmap().WithZone("")
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

// run updates the zone when the addresses change, reads the records back
// every Confirm, and retries a failed update with backoff.
func (r *Registrar) run(ctx context.Context) {
	defer close(r.done)
	if r.client == nil {
		r.log.Info("DNS zone records to add by hand (no -dns-server: no dynamic update); the console shows them", "zone", r.cfg.Zone)
		r.watchManual(ctx)
		return
	}
	retry := time.Duration(0)
	next := time.Now() // update at once
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		if addrs, err := r.addrs(); err != nil {
			r.log.Warn("cannot list the edge's addresses for DNS", "err", err)
		} else {
			r.mu.Lock()
			changed := !slices.Equal(addrs, r.pub.Addrs)
			if changed {
				r.pub.Addrs = addrs
				r.published = false
			}
			r.mu.Unlock()
			if changed {
				r.log.Info("the edge's addresses changed; updating DNS", "addrs", fmt.Sprint(addrs))
				next = time.Now()
			}
		}
		if !time.Now().Before(next) {
			if err := r.sync(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				retry = min(max(2*retry, r.cfg.Poll), time.Minute)
				next = time.Now().Add(retry)
			} else {
				retry = 0
				next = time.Now().Add(r.cfg.Confirm)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchManual keeps the snippet's addresses current in manual mode.
func (r *Registrar) watchManual(ctx context.Context) {
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if addrs, err := r.addrs(); err == nil {
			r.mu.Lock()
			r.pub.Addrs = addrs
			r.mu.Unlock()
		}
	}
}

// sync makes the zone hold pub: an update when it is not known to be
// published, then a read-back that confirms it (or, if the records are
// gone or differ, updates again at once).
func (r *Registrar) sync(ctx context.Context) error {
	r.mu.Lock()
	pub, published := r.pub, r.published
	pub.Addrs = slices.Clone(pub.Addrs)
	r.mu.Unlock()
	if published {
		err := r.confirm(ctx, pub)
		if err == nil {
			r.setOK()
			return nil
		}
		r.log.Warn("the edge's DNS records are not as published; updating them again", "zone", pub.Zone, "why", err)
	}
	if err := r.update(ctx, pub); err != nil {
		r.setErr(err)
		r.log.Error("DNS update refused or failed: terminals on other segments cannot find the edge by DNS", "zone", pub.Zone, "server", r.cfg.Server, "err", err)
		return err
	}
	r.mu.Lock()
	r.published, r.lastUpd = true, time.Now()
	r.mu.Unlock()
	if err := r.confirm(ctx, pub); err != nil {
		err = fmt.Errorf("the server accepted the update but does not answer with the records: %w", err)
		r.setErr(err)
		r.log.Error("DNS records not confirmed", "zone", pub.Zone, "err", err)
		return err
	}
	r.setOK()
	r.log.Info("DNS-SD records published and confirmed", "zone", pub.Zone, "server", r.cfg.Server, "instance", pub.InstanceFQDN(), "host", pub.Host, "addrs", fmt.Sprint(pub.Addrs))
	return nil
}

func (r *Registrar) setOK() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastConf = time.Now()
	r.errMsg = ""
}

func (r *Registrar) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errMsg, r.errAt = err.Error(), time.Now()
	r.published = false
}

// update replaces the edge's records in one signed message: RFC 2136
// applies it as a whole, so a terminal never sees an SRV without its
// address. The service PTR is shared with other edges in the zone, so only
// this edge's own PTR record is added, never the RRset replaced.
func (r *Registrar) update(ctx context.Context, pub Publication) error {
	m := new(dns.Msg)
	m.SetUpdate(pub.Zone)
	inst := pub.InstanceFQDN()
	m.RemoveRRset([]dns.RR{
		&dns.ANY{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeSRV, Class: dns.ClassINET}},
		&dns.ANY{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeTXT, Class: dns.ClassINET}},
		&dns.ANY{Hdr: dns.RR_Header{Name: pub.Host, Rrtype: dns.TypeA, Class: dns.ClassINET}},
		&dns.ANY{Hdr: dns.RR_Header{Name: pub.Host, Rrtype: dns.TypeAAAA, Class: dns.ClassINET}},
	})
	m.Insert(pub.RRs())
	return r.exchange(ctx, m)
}

// remove deletes the edge's records (shutdown).
func (r *Registrar) remove(ctx context.Context, pub Publication) error {
	m := new(dns.Msg)
	m.SetUpdate(pub.Zone)
	inst := pub.InstanceFQDN()
	m.RemoveRRset([]dns.RR{
		&dns.ANY{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeSRV, Class: dns.ClassINET}},
		&dns.ANY{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeTXT, Class: dns.ClassINET}},
		&dns.ANY{Hdr: dns.RR_Header{Name: pub.Host, Rrtype: dns.TypeA, Class: dns.ClassINET}},
		&dns.ANY{Hdr: dns.RR_Header{Name: pub.Host, Rrtype: dns.TypeAAAA, Class: dns.ClassINET}},
	})
	m.Remove([]dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: serviceIn(pub.Zone), Rrtype: dns.TypePTR, Class: dns.ClassINET}, Ptr: inst}})
	return r.exchange(ctx, m)
}

// exchange sends a signed update and explains a refusal.
func (r *Registrar) exchange(ctx context.Context, m *dns.Msg) error {
	k := r.cfg.Key
	m.SetTsig(k.Name, k.Algorithm, 300, time.Now().Unix())
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	resp, _, err := r.client.ExchangeContext(ctx, m, r.cfg.Server)
	if resp != nil && resp.Rcode != dns.RcodeSuccess {
		return updateRefused(resp, k.Name)
	}
	if err != nil {
		if errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrTime) {
			return fmt.Errorf("the DNS server's answer to the update has no valid signature with key %s (%w): check -dns-tsig-key-file", k.Name, err)
		}
		return fmt.Errorf("cannot reach the DNS server %s: %w (check -dns-server and that TCP port 53 is open)", r.cfg.Server, err)
	}
	return nil
}

// updateRefused explains a refused update to the operator.
func updateRefused(resp *dns.Msg, keyName string) error {
	rc := dns.RcodeToString[resp.Rcode]
	if t := resp.IsTsig(); t != nil && t.Error != 0 {
		switch t.Error {
		case dns.RcodeBadSig:
			return fmt.Errorf("the DNS server refused the update's TSIG signature (%s, BADSIG): the secret in -dns-tsig-key-file is not the one the server has for key %s", rc, keyName)
		case dns.RcodeBadKey:
			return fmt.Errorf("the DNS server does not know TSIG key %s (%s, BADKEY): add the key to the server or fix its name in -dns-tsig-key-file", keyName, rc)
		case dns.RcodeBadTime:
			return fmt.Errorf("the DNS server refused the update's time (%s, BADTIME): the edge's clock and the server's differ by more than 5 minutes", rc)
		}
		return fmt.Errorf("the DNS server refused the update (%s, TSIG error %d)", rc, t.Error)
	}
	switch resp.Rcode {
	case dns.RcodeRefused:
		return fmt.Errorf("the DNS server refused the update (REFUSED): allow key %s to update the zone (BIND: update-policy { grant %s zonesub ANY; };)", keyName, strings.TrimSuffix(keyName, "."))
	case dns.RcodeNotAuth:
		return fmt.Errorf("the DNS server is not authoritative for the zone or rejected key %s (NOTAUTH): check -dns-zone and -dns-server (the zone's primary)", keyName)
	case dns.RcodeNotZone:
		return errors.New("the records are not inside the zone (NOTZONE): check -dns-zone")
	}
	return fmt.Errorf("the DNS server refused the update (%s)", rc)
}

// confirm reads the records back from the server.
func (r *Registrar) confirm(ctx context.Context, pub Publication) error {
	res := &Resolver{Servers: []string{r.cfg.Server}, Timeout: r.cfg.Timeout}
	srv, err := res.Query(ctx, pub.InstanceFQDN(), dns.TypeSRV)
	if err != nil {
		return err
	}
	okSRV := false
	for _, rr := range srv.Answer {
		if s, ok := rr.(*dns.SRV); ok && int(s.Port) == pub.Port && sameName(s.Target, pub.Host) {
			okSRV = true
		}
	}
	if !okSRV {
		return fmt.Errorf("SRV %s does not point at %s:%d", pub.InstanceFQDN(), pub.Host, pub.Port)
	}
	var got []netip.Addr
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := res.Query(ctx, pub.Host, t)
		if err != nil && !isNoData(err) {
			return err
		}
		got = append(got, addrsOf(m)...)
	}
	slices.SortFunc(got, func(a, b netip.Addr) int { return a.Compare(b) })
	if !slices.Equal(got, pub.Addrs) {
		return fmt.Errorf("%s has addresses %v, not %v", pub.Host, got, pub.Addrs)
	}
	return nil
}

func addrsOf(m *dns.Msg) []netip.Addr {
	if m == nil {
		return nil
	}
	var out []netip.Addr
	for _, rr := range m.Answer {
		switch a := rr.(type) {
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				out = append(out, ip)
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(a.AAAA.To16()); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// Status reports what is published and when it was last confirmed.
func (r *Registrar) Status() DNSStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := DNSStatus{Zone: r.cfg.Zone, Server: r.cfg.Server, Mode: "manual", Instance: r.pub.Instance, Host: r.pub.Host, Addrs: []string{}, Records: []string{},
		Error: r.errMsg, ZoneSnippet: r.pub.ZoneSnippet(), DnsmasqSnippet: r.pub.DnsmasqSnippet()}
	if r.client != nil {
		s.Mode, s.KeyName = "dynamic_update", r.cfg.Key.Name
	}
	for _, a := range r.pub.Addrs {
		s.Addrs = append(s.Addrs, a.String())
	}
	for _, rr := range r.pub.RRs() {
		s.Records = append(s.Records, rr.String())
	}
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	s.LastUpdate, s.LastConfirmed = at(r.lastUpd), at(r.lastConf)
	if r.errMsg != "" {
		s.ErrorAt = at(r.errAt)
	}
	return s
}

// Close stops the updates and removes the edge's records from the zone,
// so that terminals do not try an edge that is gone. It is safe to call
// more than once and from several goroutines (the context given to
// Register ends it too): every call returns when the removal is done, so a
// shutting-down edge does not exit before it.
func (r *Registrar) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Registrar) close() error {
	r.cancel()
	<-r.done
	if r.client == nil {
		return nil
	}
	r.mu.Lock()
	pub := r.pub
	r.mu.Unlock()
	ctx, done := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer done()
	if err := r.remove(ctx, pub); err != nil {
		r.log.Warn("could not remove the edge's DNS records at shutdown; remove them by hand or they stay until the edge starts again", "zone", pub.Zone, "err", err)
		return err
	}
	r.log.Info("DNS-SD records removed", "zone", pub.Zone, "instance", pub.InstanceFQDN())
	return nil
}
