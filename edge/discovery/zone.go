package discovery

import (
	"fmt"
	"net"
	"sync/atomic"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

// zone is the mdns.Zone served on one interface. The records themselves come
// from the library's mdns.MDNSService; zone adds two things:
//
//   - Name matching as DNS requires it. The library compares a question's
//     name with its own as Go strings, but names are case-insensitive and
//     github.com/miekg/dns hands questions over in escaped presentation form
//     ("Springfield\ Elementary._campusedge._tcp.local.", "\229\140\151…" for
//     UTF-8), so a browser resolving an instance whose name has a space or a
//     Chinese character would get no answer. zone compares wire forms,
//     ASCII case-folded, and asks the library with the library's spelling.
//   - Swapping the service atomically when the interface's addresses change,
//     without restarting the servers.
type zone struct {
	svc   atomic.Pointer[mdns.MDNSService]
	names map[string]string // canonical wire form → name as the library spells it
	host  string            // canonical wire form of the host name
}

func newZone(instance, hostName string, port int, ips []net.IP, txt []string) (*zone, error) {
	svc, err := mdns.NewMDNSService(instance, ServiceType, domain, hostName, port, ips, txt)
	if err != nil {
		return nil, err
	}
	z := &zone{names: make(map[string]string, 4)}
	// The same spellings NewMDNSService builds internally.
	for _, n := range []string{enumName, serviceName, instance + "." + serviceName, hostName} {
		k, ok := canonical(n)
		if !ok {
			return nil, fmt.Errorf("name %q cannot be encoded as a domain name", n)
		}
		z.names[k] = n
	}
	z.host, _ = canonical(hostName)
	z.svc.Store(svc)
	return z, nil
}

// setIPs replaces the addresses in the zone's A/AAAA records.
func (z *zone) setIPs(ips []net.IP) error {
	old := z.svc.Load()
	svc, err := mdns.NewMDNSService(old.Instance, old.Service, old.Domain, old.HostName, old.Port, ips, old.TXT)
	if err != nil {
		return err
	}
	z.svc.Store(svc)
	return nil
}

// Records implements mdns.Zone.
func (z *zone) Records(q dns.Question) []dns.RR {
	k, ok := canonical(q.Name)
	if !ok {
		return nil
	}
	name, ok := z.names[k]
	if !ok {
		return nil
	}
	svc := z.svc.Load()
	q.Name = name
	if k == z.host && q.Qtype == dns.TypeANY {
		// The library answers only A or AAAA questions for the host name.
		a := svc.Records(dns.Question{Name: name, Qtype: dns.TypeA, Qclass: q.Qclass})
		return append(a, svc.Records(dns.Question{Name: name, Qtype: dns.TypeAAAA, Qclass: q.Qclass})...)
	}
	return svc.Records(q)
}

// announcement returns every record this zone publishes: the service-type
// enumeration PTR, the service PTR, SRV, TXT and the host's A/AAAA records.
func (z *zone) announcement() []dns.RR {
	svc := z.svc.Load()
	rrs := svc.Records(dns.Question{Name: enumName, Qtype: dns.TypePTR, Qclass: dns.ClassINET})
	return append(rrs, svc.Records(dns.Question{Name: serviceName, Qtype: dns.TypePTR, Qclass: dns.ClassINET})...)
}

// canonical returns the wire form of a domain name with ASCII letters folded
// to lower case, so that two spellings of one name compare equal.
func canonical(name string) (string, bool) {
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil {
		return "", false
	}
	b := buf[:n]
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b), true
}

// sameName reports whether a and b are the same domain name.
func sameName(a, b string) bool {
	ka, ok1 := canonical(a)
	kb, ok2 := canonical(b)
	return ok1 && ok2 && ka == kb
}

// instanceOf returns the instance label of a service instance name of our
// service type on mDNS, unescaped ("Springfield\ Elementary._campusedge._tcp.local."
// → "Springfield Elementary"), or false for any other name.
func instanceOf(name string) (string, bool) { return instanceIn(name, serviceName) }
