package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
)

// DefaultRescan is how often an Advertiser re-reads the interfaces and their
// addresses when Config.Rescan is zero. A new DHCP lease must reach the
// mDNS records about as fast as it reaches the unicast DNS-SD ones (the
// address watch polls every 2 s): a terminal that finds the old address
// by mDNS fails to connect. Reading the interfaces is one netlink dump.
const DefaultRescan = 3 * time.Second

// Config says what to advertise and where.
type Config struct {
	// Instance is the DNS-SD instance name people see, derived from the
	// school's name with InstanceName.
	Instance string
	// HostName is the mDNS host name the SRV record points at, fully
	// qualified ("edge-3.local."). Empty means the system host name + ".local.".
	HostName string
	// Port is the edge's HTTP port.
	Port int
	// Info goes into the TXT record.
	Info Info
	// Interfaces are the names of the interfaces to advertise on. Empty means
	// every interface that is up and multicast-capable, re-checked every
	// Rescan so that a cable plugged in or an address from a late DHCP
	// server is picked up.
	Interfaces []string
	// Rescan is how often interfaces and addresses are re-read; zero means
	// DefaultRescan, negative means never (only at start).
	Rescan time.Duration
	// Logger receives the advertiser's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Status is the advertisement's health, for /healthz and the console.
type Status struct {
	// Active is true when the edge is advertised on at least one interface.
	Active bool `json:"active"`
	// Interfaces are the interfaces it is advertised on, sorted.
	Interfaces []string `json:"interfaces"`
	// Problem says, for an operator, what is not working: why nothing is
	// advertised when Active is false, or which wanted interfaces failed.
	Problem string `json:"problem,omitempty"`
}

// Advertiser keeps the edge advertised until Close or until the context
// given to Advertise is done.
type Advertiser struct {
	cfg       Config
	log       *slog.Logger
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	announceN int // announcements per start or change

	mu        sync.Mutex
	stopWatch func() bool       // stops the context.AfterFunc that calls Close
	links     map[string]*link  // by interface name
	problems  map[string]string // interface name → why it is not used
	closed    bool
	reported  string // last Status logged, to log changes only
}

// link is the advertisement on one interface: the library's server for
// legacy queriers plus our responder (see responder.go).
type link struct {
	ifi       net.Interface
	ips       []net.IP
	zone      *zone
	server    *mdns.Server
	resp      *responder
	series    chan struct{} // closed to stop the running announcement series
	announceN int
	wg        sync.WaitGroup
}

// Advertise starts advertising the edge by DNS-SD and returns at once. It
// fails only when cfg is invalid. When no chosen interface can multicast it
// still succeeds: Status reports Active=false with the reason, a warning is
// logged, and the interfaces are re-checked every cfg.Rescan. The
// advertisement stops, with goodbye packets, on Close or when ctx is done.
func Advertise(ctx context.Context, cfg Config) (*Advertiser, error) {
	return advertise(ctx, cfg, announceN)
}

// advertise is Advertise with the number of announcements per change as a
// parameter: tests set it to 0 to check that browsers are answered when
// they ask, not only told.
func advertise(ctx context.Context, cfg Config, announcements int) (*Advertiser, error) {
	if err := checkInstance(cfg.Instance); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("discovery: port %d is not a TCP port", cfg.Port)
	}
	if cfg.HostName == "" {
		h, _ := os.Hostname() // on error hostLabel falls back to "campusedge"
		cfg.HostName = hostLabel(h) + "." + domain
	}
	if err := checkHostName(cfg.HostName); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if cfg.Info.Version == "" {
		cfg.Info.Version = txtVersion
	}
	if cfg.Info.API == "" {
		cfg.Info.API = defaultAPI
	}
	if _, err := ParseTXT(cfg.Info.TXT()); err != nil {
		return nil, fmt.Errorf("discovery: invalid Info: %w", err)
	}
	for _, name := range cfg.Interfaces {
		if name == "" || len(name) > 64 || strings.ContainsAny(name, "/ \x00") {
			return nil, fmt.Errorf("discovery: invalid interface name %q", name)
		}
	}
	cfg.Interfaces = slices.Clone(cfg.Interfaces)
	if cfg.Rescan == 0 {
		cfg.Rescan = DefaultRescan
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Logger = log

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a := &Advertiser{
		cfg:       cfg,
		log:       log,
		cancel:    cancel,
		links:     make(map[string]*link),
		announceN: announcements,
	}
	a.reconcile()
	if cfg.Rescan > 0 {
		a.wg.Add(1)
		go a.rescanLoop(runCtx, cfg.Rescan)
	}
	stop := context.AfterFunc(ctx, func() { _ = a.Close() })
	a.mu.Lock()
	a.stopWatch = stop // under the lock: Close may already be running
	a.mu.Unlock()
	return a, nil
}

// Status reports where the edge is advertised and what is wrong.
func (a *Advertiser) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statusLocked()
}

func (a *Advertiser) statusLocked() Status {
	var s Status
	for name := range a.links {
		s.Interfaces = append(s.Interfaces, name)
	}
	sort.Strings(s.Interfaces)
	s.Active = len(s.Interfaces) > 0
	var probs []string
	for name, p := range a.problems {
		probs = append(probs, name+": "+p)
	}
	sort.Strings(probs)
	switch {
	case a.closed:
		s.Problem = "advertisement stopped"
	case !s.Active && len(probs) > 0:
		s.Problem = "no multicast-capable interface (" + strings.Join(probs, "; ") + "); terminals must use -edge URL"
	case !s.Active:
		s.Problem = "no multicast-capable interface is up; terminals must use -edge URL"
	default:
		s.Problem = strings.Join(probs, "; ")
	}
	return s
}

// Close sends goodbye packets, so browsers drop the edge at once, and stops
// advertising. It is safe to call more than once.
func (a *Advertiser) Close() error {
	a.closeOnce.Do(func() {
		a.cancel()
		a.mu.Lock()
		if a.stopWatch != nil {
			a.stopWatch()
		}
		a.closed = true
		links := a.links
		a.links = nil
		a.mu.Unlock()
		a.wg.Wait()
		for _, l := range links {
			l.close(true)
		}
		a.log.Debug("DNS-SD advertisement stopped", "interfaces", len(links))
	})
	return nil
}

func (a *Advertiser) rescanLoop(ctx context.Context, every time.Duration) {
	defer a.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.reconcile()
		}
	}
}

// candidate is an interface we want to advertise on, with its addresses.
type candidate struct {
	ifi net.Interface
	ips []net.IP
}

// scan decides which interfaces to use now, and why the others are not used.
func (a *Advertiser) scan() (map[string]candidate, map[string]string) {
	want := make(map[string]candidate)
	problems := make(map[string]string)
	var ifaces []net.Interface
	if len(a.cfg.Interfaces) == 0 {
		all, err := net.Interfaces()
		if err != nil {
			problems["*"] = "cannot list interfaces: " + err.Error()
		}
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
				ifaces = append(ifaces, ifi)
			}
		}
	} else {
		for _, name := range a.cfg.Interfaces {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				problems[name] = "not found"
				continue
			}
			ifaces = append(ifaces, *ifi)
		}
	}
	for _, ifi := range ifaces {
		switch {
		case ifi.Flags&net.FlagUp == 0:
			problems[ifi.Name] = "interface is down"
			continue
		case ifi.Flags&net.FlagMulticast == 0:
			// The case of lo outside a test namespace: without the flag,
			// joining 224.0.0.251 fails with "no such device".
			problems[ifi.Name] = "interface has no MULTICAST flag"
			continue
		}
		ips, err := interfaceIPs(ifi)
		if err != nil {
			problems[ifi.Name] = "cannot read addresses: " + err.Error()
			continue
		}
		if len(ips) == 0 {
			problems[ifi.Name] = "no IP address yet"
			continue
		}
		want[ifi.Name] = candidate{ifi: ifi, ips: ips}
	}
	return want, problems
}

func interfaceIPs(ifi net.Interface) ([]net.IP, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok && ipn.IP.To16() != nil && !ipn.IP.IsUnspecified() {
			ips = append(ips, ipn.IP)
		}
	}
	sort.Slice(ips, func(i, j int) bool { return string(ips[i].To16()) < string(ips[j].To16()) })
	return ips, nil
}

func sameIPs(a, b []net.IP) bool {
	return slices.EqualFunc(a, b, func(x, y net.IP) bool { return x.Equal(y) })
}

// reconcile brings the running links in line with the interfaces as they
// are now, and logs when the outcome changes.
func (a *Advertiser) reconcile() {
	want, problems := a.scan()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	for name, l := range a.links {
		c, ok := want[name]
		if !ok || c.ifi.Index != l.ifi.Index {
			l.close(true)
			delete(a.links, name)
		}
	}
	for name, c := range want {
		if l, ok := a.links[name]; ok {
			if !sameIPs(l.ips, c.ips) {
				l.setIPs(c.ips, a.log)
			}
			continue
		}
		l, err := a.startLink(c)
		if err != nil {
			problems[name] = err.Error()
			continue
		}
		a.links[name] = l
	}
	a.problems = problems
	a.report()
}

// report logs the status when it differs from the last one logged.
func (a *Advertiser) report() {
	s := a.statusLocked()
	key := fmt.Sprint(s.Active, s.Interfaces, s.Problem)
	if key == a.reported {
		return
	}
	a.reported = key
	switch {
	case !s.Active:
		a.log.Warn("DNS-SD advertisement inactive", "problem", s.Problem, "service", ServiceType, "instance", a.cfg.Instance)
	case s.Problem != "":
		a.log.Warn("DNS-SD advertising on some interfaces only", "interfaces", s.Interfaces, "problem", s.Problem, "instance", a.cfg.Instance)
	default:
		a.log.Info("DNS-SD advertising", "service", ServiceType, "instance", a.cfg.Instance, "port", a.cfg.Port, "interfaces", s.Interfaces)
	}
}

func (a *Advertiser) startLink(c candidate) (*link, error) {
	z, err := newZone(a.cfg.Instance, a.cfg.HostName, a.cfg.Port, c.ips, a.cfg.Info.TXT())
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	ifi := c.ifi
	srv, err := newServer(&mdns.Config{
		Zone:   z,
		Iface:  &ifi,
		Logger: slog.NewLogLogger(a.log.With("iface", ifi.Name, "via", "hashicorp/mdns").Handler(), slog.LevelDebug),
	})
	if err != nil {
		return nil, fmt.Errorf("mDNS server: %w", err)
	}
	resp, err := startResponder(ifi, z, a.log)
	if err != nil {
		_ = srv.Shutdown()
		return nil, err
	}
	l := &link{ifi: ifi, ips: c.ips, zone: z, server: srv, resp: resp, announceN: a.announceN}
	l.announce()
	return l, nil
}

// announce sends l.announceN unsolicited responses announceGap apart, in the
// background, stopping a series still running from an earlier call.
// Callers hold the Advertiser's lock.
func (l *link) announce() {
	if l.series != nil {
		close(l.series)
		l.wg.Wait()
	}
	stop := make(chan struct{})
	l.series = stop
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTimer(0)
		defer t.Stop()
		for i := 0; i < l.announceN; i++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			l.resp.send(announcement(l.zone), "announcement")
			t.Reset(announceGap)
		}
	}()
}

// setIPs publishes new addresses: the records change in place and the new
// ones are announced (with cache-flush, so browsers replace the old ones).
func (l *link) setIPs(ips []net.IP, log *slog.Logger) {
	if err := l.zone.setIPs(ips); err != nil {
		log.Warn("DNS-SD: cannot update addresses", "iface", l.ifi.Name, "err", err)
		return
	}
	l.ips = ips
	log.Info("DNS-SD addresses changed; announcing", "iface", l.ifi.Name, "ips", ips)
	l.announce()
}

// close stops the link. With goodbye, it first stops answering (so no
// answer can follow the goodbye), then tells browsers the service is gone.
func (l *link) close(goodbye bool) {
	if l.series != nil {
		close(l.series)
		l.series = nil
	}
	l.wg.Wait()
	_ = l.server.Shutdown() // never fails in v1.0.7
	if goodbye {
		l.resp.send(goodbyeMsg(l.zone), "goodbye")
	}
	l.resp.close()
}
