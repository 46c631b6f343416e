package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/campusedge/campusedge/sync/hubtls"
)

// defaultHTTPSPort is where cityhub serves HTTPS unless -https-listen says
// otherwise. Not 443: cityhub runs unprivileged, often beside a web
// server. Not 8443: that is edged's HTTPS port, and a lab, a demo or a
// small city running both on one machine must not collide. 9443 is the
// common "second HTTPS" port and sits apart from the plain :8090.
const defaultHTTPSPort = "9443"

// tlsFlags are cityhub's TLS and city CA flags.
type tlsFlags struct {
	httpsListen *string
	cert, key   *string
	names       *string
	caCert      *string
	caKey       *string
	caDomains   *string
	caNets      *string
}

func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	return &tlsFlags{
		httpsListen: fs.String("https-listen", "", "HTTPS listen `addr`; default: the host of -listen on port "+defaultHTTPSPort+" (a free port when -listen's port is 0); \"off\" serves plain HTTP only"),
		cert:        fs.String("tls-cert", "", "operator's TLS certificate `file` (PEM, leaf first); re-read when it changes. Default: the hub's own self-signed certificate in DATA/"+hubtls.ServingCertFile),
		key:         fs.String("tls-key", "", "private key `file` for -tls-cert"),
		names:       fs.String("tls-names", "", "comma list of DNS names and IPs the hub's own certificate covers, besides localhost, loopback and its interface addresses"),
		caCert:      fs.String("city-ca-cert", "", "city CA certificate `file` that signs edge certificates: the signing CA first, intermediates, the city root last. Default: a CA made in DATA/"+hubtls.CACertFile),
		caKey:       fs.String("city-ca-key", "", "private key `file` of the first certificate in -city-ca-cert"),
		caDomains:   fs.String("city-ca-domains", "local", "comma list of DNS domains edge certificates may name (a name must equal one or end in .domain)"),
		caNets:      fs.String("city-ca-nets", strings.Join(hubtls.DefaultNets, ","), "comma list of address `ranges` edge certificates may name"),
	}
}

// httpsAddr resolves -https-listen against -listen ("" when off).
func (f *tlsFlags) httpsAddr(listen string) (string, error) {
	switch *f.httpsListen {
	case "off":
		return "", nil
	case "":
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return "", fmt.Errorf("-listen %q: %w", listen, err)
		}
		if port != "0" {
			port = defaultHTTPSPort
		}
		return net.JoinHostPort(host, port), nil
	}
	return *f.httpsListen, nil
}

// certSource is the serving certificate: the operator's files or the hub's own.
type certSource interface {
	Current() *tls.Certificate
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

func (f *tlsFlags) serving(data string, log *slog.Logger) (certSource, error) {
	if (*f.cert == "") != (*f.key == "") {
		return nil, errors.New("-tls-cert and -tls-key go together: give both, or neither for the hub's own certificate")
	}
	if *f.cert != "" {
		return hubtls.NewFileCert(*f.cert, *f.key, log)
	}
	names := hubtls.DefaultNames()
	for _, n := range strings.Split(*f.names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return hubtls.NewSelf(data, names, log)
}

// pin is the SPKI pin of the serving certificate edges will see.
func (f *tlsFlags) pin(data string) (string, error) {
	if *f.cert == "" && *f.key == "" {
		return hubtls.ServingPin(data)
	}
	src, err := f.serving(data, nil)
	if err != nil {
		return "", err
	}
	return hubtls.Pin(src.Current())
}

func (f *tlsFlags) cityCA(data string, log *slog.Logger) (*hubtls.CA, error) {
	pol := hubtls.Policy{}
	for _, d := range strings.Split(*f.caDomains, ",") {
		if d = strings.Trim(strings.TrimSpace(d), "."); d != "" {
			pol.Domains = append(pol.Domains, d)
		}
	}
	for _, n := range strings.Split(*f.caNets, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("-city-ca-nets: %w", err)
		}
		pol.Nets = append(pol.Nets, p)
	}
	if (*f.caCert == "") != (*f.caKey == "") {
		return nil, errors.New("-city-ca-cert and -city-ca-key go together: give both, or neither for the hub's own city CA")
	}
	var ca *hubtls.CA
	var err error
	made, from := false, *f.caCert
	if *f.caCert != "" {
		ca, err = hubtls.LoadCA(*f.caCert, *f.caKey, pol)
	} else {
		from = data + "/" + hubtls.CACertFile
		ca, made, err = hubtls.LoadOrCreateCA(data, "CampusEdge city CA", pol)
	}
	if err != nil {
		return nil, err
	}
	fp := sha256.Sum256(ca.Root().Raw)
	msg := "city CA"
	if made {
		msg = "made a new city CA; give its root to the city's devices to trust"
	}
	log.Info(msg, "file", from, "root", ca.Root().Subject.CommonName, "root_sha256", hex.EncodeToString(fp[:]),
		"domains", strings.Join(pol.Domains, ","), "nets", *f.caNets)
	return ca, nil
}
