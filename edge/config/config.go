// Package config holds edged's settings: embedded defaults that run a school
// with no configuration at all, an optional JSON file, and command-line flags
// that override both.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/discovery"
)

// Config is everything edged needs to start.
type Config struct {
	DataDir string `json:"data"`
	Listen  string `json:"listen"`
	// Cloud is the cityhub base URL; empty runs fully offline.
	Cloud string `json:"cloud"`
	// School is the school code the city knows this school by (TXT school=).
	School string `json:"school"`
	// SchoolName is the human name; the DNS-SD instance name comes from it.
	SchoolName string `json:"school_name"`
	// MDNS turns DNS-SD advertisement on or off.
	MDNS bool `json:"mdns"`
	// MDNSInterfaces restricts advertisement to these interfaces; empty
	// means every up, multicast-capable interface.
	MDNSInterfaces []string `json:"mdns_interfaces"`
	// DNSZone is the school's DNS zone where the edge keeps its unicast
	// DNS-SD records (terminals on other VLANs find it there); empty: off.
	DNSZone string `json:"dns_zone"`
	// DNSServer is the zone's primary, which takes RFC 2136 updates; empty
	// with DNSZone set: the console shows the records to add by hand.
	DNSServer string `json:"dns_server"`
	// DNSTSIGKeyFile is the TSIG key (BIND syntax) that signs the updates.
	DNSTSIGKeyFile string `json:"dns_tsig_key_file"`
	LogLevel       string `json:"log_level"`
	// Firmware updates (docs/FIRMWARE.md); FirmwareRoot empty turns them off.
	FirmwareRoot    string `json:"fw_root"`
	FirmwareKeys    string `json:"fw_keys"`
	FirmwareTarget  string `json:"fw_target"`
	FirmwareChannel string `json:"fw_channel"`
	FirmwareRate    int64  `json:"fw_rate"`
	// Terminal image waves: how many terminals update at once, how often.
	FirmwareWave         int           `json:"fw_wave"`
	FirmwareWaveInterval time.Duration `json:"fw_wave_interval"`

	// Resource cache (edge/cache).
	CacheQuota        string `json:"cache_quota"`         // e.g. "500G"; "" = disk free space
	CacheBandwidth    string `json:"cache_bandwidth"`     // e.g. "07:30-17:00=4M,default=unlimited"
	CachePrefetchDays int    `json:"cache_prefetch_days"` // timetable horizon
	CacheUploadMax    string `json:"cache_upload_max"`    // largest teacher upload
	// SyncRate caps the uplink's upload in bytes per second (0: no cap).
	SyncRate int `json:"sync_rate"`
	// ReconnectGrace is how long a classroom that vanished from a live
	// class (or whose edge restarted) has to come back before its leave is
	// recorded; back within it, attendance marks a reconnect.
	ReconnectGrace time.Duration `json:"reconnect_grace"`

	// HTTPS (edge/certs). HTTPSListen empty means -listen's host on port
	// 8443 (port 0 when -listen picks a free port); "off" turns HTTPS off.
	HTTPSListen string `json:"https_listen"`
	// TLSCert and TLSKey are an operator's certificate files (both or none).
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// TLSNames are extra DNS names or addresses to certify.
	TLSNames []string `json:"tls_names"`
	// CloudCA is a PEM file of roots (the city's) trusted, besides the
	// system's, for an https:// hub enrolled by CA (token without a pin).
	CloudCA string `json:"cloud_ca"`
	// TimeZone is the school's IANA time zone: timetable periods, and the
	// dates and times every page shows, are in it.
	TimeZone string `json:"time_zone"`
	// Language is the school's language (a BCP 47 tag the pages have a
	// catalogue for): pages use it when the browser asks for none they have.
	Language string `json:"language"`
	// SimulcastLayers turns on choosing a simulcast layer per subscriber
	// (on by default; off: every subscriber gets a simulcast publisher's
	// top layer).
	SimulcastLayers bool `json:"simulcast_layers"`
	// SVCLayers forwards a VP9 SVC track (one SSRC, L3T3_KEY/L3T3) by
	// layer per subscriber, and tells pages they may send it (on by
	// default, with SimulcastLayers; off: pages send simulcast).
	SVCLayers bool `json:"svc_layers"`
	// HTTPSRedirect sends page requests on plain HTTP from other hosts to
	// HTTPS; off only behind a proxy that terminates TLS itself.
	HTTPSRedirect bool `json:"https_redirect"`
	// MaxConnsPerAddr bounds the connections one LAN address may hold open
	// (0: no bound; loopback is exempt).
	MaxConnsPerAddr int `json:"max_conns_per_addr"`
	// BodyDeadline is how long a request body may take to arrive (uploads:
	// how long they may stall instead).
	BodyDeadline time.Duration `json:"body_deadline"`
	// MediaFastPath answers plain whole-file /media requests on HTTP/1.1
	// below net/http (edge/cache/fastpath.go); off: net/http serves all.
	MediaFastPath bool `json:"media_fastpath"`
}

// DefaultHTTPSPort is the HTTPS port when -https-listen is not given.
const DefaultHTTPSPort = "8443"

// HTTPSAddr is the address HTTPS listens on, or "" when it is off.
func (c Config) HTTPSAddr() string {
	switch c.HTTPSListen {
	case "off":
		return ""
	case "":
		host, port, _ := net.SplitHostPort(c.Listen)
		if port != "0" {
			port = DefaultHTTPSPort
		}
		return net.JoinHostPort(host, port)
	}
	return c.HTTPSListen
}

// Defaults are the embedded defaults: `edged` with no flags runs on them.
func Defaults() Config {
	return Config{DataDir: "./data", Listen: ":8080", School: "school", MDNS: true, LogLevel: "info",
		FirmwareTarget: runtime.GOOS + "-" + runtime.GOARCH, FirmwareChannel: "stable",
		FirmwareWave: 5, FirmwareWaveInterval: 10 * time.Second,
		CachePrefetchDays: 7, CacheUploadMax: "2G", HTTPSRedirect: true,
		MaxConnsPerAddr: 64, BodyDeadline: 10 * time.Second, MediaFastPath: true,
		TimeZone: "Asia/Shanghai", Language: "zh-CN",
		ReconnectGrace: 20 * time.Second, SimulcastLayers: true, SVCLayers: true}
}

// maxFileBytes bounds the config file; a config is a few hundred bytes.
const maxFileBytes = 1 << 20

// Parse builds the config from defaults, then the -config file, then the
// flags that were set explicitly, and validates the result.
func Parse(name string, args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var file string
	fs.StringVar(&file, "config", "", "optional JSON config `file` (keys: data, listen, cloud, school, school_name, mdns, mdns_interfaces, log_level, fw_root, fw_keys, fw_target, fw_channel, fw_rate, fw_wave, fw_wave_interval (nanoseconds), cache_quota, cache_bandwidth, cache_prefetch_days, cache_upload_max, sync_rate, https_listen, tls_cert, tls_key, tls_names, cloud_ca, https_redirect, time_zone, language); flags override it")
	parsed := Defaults()
	defineFlags(fs, &parsed)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\n%s runs the CampusEdge school appliance. With no flags it starts on embedded\ndefaults: data in ./data, HTTP on :8080, DNS-SD on, no cloud.\n\nFlags:\n", name, name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	}
	out := Defaults()
	if file != "" {
		if err := loadFile(file, &out); err != nil {
			return Config{}, err
		}
	}
	// The flags set explicitly override the file: the same definitions,
	// bound to out, take each one's value.
	override := flag.NewFlagSet(name, flag.ContinueOnError)
	defineFlags(override, &out)
	var err error
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "config" && err == nil {
			err = override.Set(f.Name, f.Value.String())
		}
	})
	if err != nil {
		return Config{}, err
	}
	return out, out.Validate()
}

// defineFlags defines edged's flags (all but -config) on fs, each bound to
// its field of c with the field's current value as the default. Parse
// defines them twice: over the defaults, which -h shows, and over the
// config file's values, to apply the flags that were set.
func defineFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data `dir`: store (edge.db), admin-token, blobs; created on first start")
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP listen `addr`; with 127.0.0.1:0 a free port is picked and logged")
	fs.StringVar(&c.Cloud, "cloud", c.Cloud, "city cloud (cityhub) base `URL`; empty runs offline and sync waits")
	fs.StringVar(&c.School, "school", c.School, "school `code` as the city knows it (DNS-SD TXT school=)")
	fs.StringVar(&c.SchoolName, "school-name", c.SchoolName, "school `name` shown to people; the DNS-SD instance name (default \"CampusEdge <edge id>\")")
	fs.BoolVar(&c.MDNS, "mdns", c.MDNS, "advertise _campusedge._tcp by mDNS/DNS-SD")
	fs.Var(listFlag{&c.MDNSInterfaces}, "mdns-interfaces", "comma-separated `interfaces` to advertise on (default: every up, multicast-capable interface)")
	fs.StringVar(&c.DNSZone, "dns-zone", c.DNSZone, "the school's DNS `zone` (e.g. school.example.) where the edge keeps its _campusedge._tcp records, so terminals on other VLANs find it by unicast DNS-SD")
	fs.StringVar(&c.DNSServer, "dns-server", c.DNSServer, "the zone's primary DNS server (`host[:port]`) that takes signed dynamic updates (RFC 2136); empty: the console shows the records to add by hand")
	fs.StringVar(&c.DNSTSIGKeyFile, "dns-tsig-key-file", c.DNSTSIGKeyFile, "TSIG key `file` signing the updates, as tsig-keygen writes it (key \"NAME\" { algorithm hmac-sha256; secret \"...\"; };)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log `level`: debug, info, warn, error")
	fs.StringVar(&c.FirmwareRoot, "fw-root", c.FirmwareRoot, "firmware slot `dir` shared with edgesup; empty turns firmware updates off")
	fs.StringVar(&c.FirmwareKeys, "fw-keys", c.FirmwareKeys, "trusted release public key `files` or directories, comma-separated (needed with -fw-root)")
	fs.StringVar(&c.FirmwareTarget, "fw-target", c.FirmwareTarget, "firmware `target` this edge installs bundles for")
	fs.StringVar(&c.FirmwareChannel, "fw-channel", c.FirmwareChannel, "release `channel`: stable or beta")
	fs.Int64Var(&c.FirmwareRate, "fw-rate", c.FirmwareRate, "cap firmware downloads at this many `bytes` per second (0: no cap)")
	fs.IntVar(&c.FirmwareWave, "fw-wave", c.FirmwareWave, "terminal image updates: at most this many `terminals` at once")
	fs.DurationVar(&c.FirmwareWaveInterval, "fw-wave-interval", c.FirmwareWaveInterval, "terminal image updates: plan a wave this `often`")
	fs.StringVar(&c.CacheQuota, "cache-quota", c.CacheQuota, "resource cache `size` cap, e.g. 500G (default: the disk's free space)")
	fs.StringVar(&c.CacheBandwidth, "cache-bandwidth", c.CacheBandwidth, "WAN cap `schedule` for cache downloads, e.g. \"07:30-17:00=4M,default=unlimited\" (bits/s, local time)")
	fs.IntVar(&c.CachePrefetchDays, "cache-prefetch-days", c.CachePrefetchDays, "prefetch resources the timetable needs in the next `N` days")
	fs.StringVar(&c.CacheUploadMax, "cache-upload-max", c.CacheUploadMax, "largest teacher upload (`size`)")
	fs.IntVar(&c.SyncRate, "sync-rate", c.SyncRate, "cap city sync uploads at this many `bytes` per second (0: no cap)")
	fs.DurationVar(&c.ReconnectGrace, "reconnect-grace", c.ReconnectGrace, "live classes: a classroom that vanishes (or whose edge restarts) and is back within this `duration` reconnected; after it, its leave is recorded")
	fs.StringVar(&c.HTTPSListen, "https-listen", c.HTTPSListen, "HTTPS listen `addr` for pages, API, WebSocket, WHIP/WHEP (default: -listen's host, port 8443; port 0 if -listen's is 0); off turns HTTPS off")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "operator's TLS certificate `file` (PEM chain), reloaded when it changes; default: the edge's own CA, or the city's once enrolled")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "operator's TLS key `file` (PEM), with -tls-cert")
	fs.Var(listFlag{&c.TLSNames}, "tls-names", "extra DNS `names` or addresses the edge's certificate covers, comma-separated")
	fs.StringVar(&c.CloudCA, "cloud-ca", c.CloudCA, "PEM `file` of the city's root: trusted, besides the system's roots, for an https hub enrolled by a token without a pin")
	fs.StringVar(&c.TimeZone, "time-zone", c.TimeZone, "the school's IANA time `zone` (timetable periods; dates and times on every page), e.g. Asia/Shanghai, Asia/Urumqi")
	fs.BoolVar(&c.SimulcastLayers, "simulcast-layers", c.SimulcastLayers, "choose a simulcast layer per classroom from a bandwidth estimate of its link; the estimator runs only for classrooms that receive simulcast (=false: no estimator, every classroom gets a simulcast publisher's top layer and pages publish one layer)")
	fs.BoolVar(&c.SVCLayers, "svc-layers", c.SVCLayers, "forward a VP9 SVC camera (scalabilityMode L3T3_KEY) and the temporal layers of a single VP8 encoding by layer, each classroom the spatial/temporal layers its link carries, and let the teacher page send VP9 SVC where the browser can (=false: the page sends VP8 simulcast, single encodings are forwarded whole; needs -simulcast-layers)")
	fs.StringVar(&c.Language, "language", c.Language, "the school's `language` for pages whose browser asks for none they have: zh-CN or en")
	fs.BoolVar(&c.HTTPSRedirect, "https-redirect", c.HTTPSRedirect, "redirect page requests on plain HTTP from other hosts to HTTPS (turn off only behind a TLS-terminating proxy)")
	fs.IntVar(&c.MaxConnsPerAddr, "max-conns-per-addr", c.MaxConnsPerAddr, "connections one client address may hold open at once (`N`, 0: no limit; loopback is exempt)")
	fs.BoolVar(&c.MediaFastPath, "media-fastpath", c.MediaFastPath, "answer plain whole-file GET/HEAD /media requests on HTTP/1.1 connections below net/http (=false: net/http serves every request, for diagnosis)")
	fs.DurationVar(&c.BodyDeadline, "body-deadline", c.BodyDeadline, "how long a request body may take to arrive (`duration`); uploads may instead pause at most 60s between reads")
}

// listFlag is a comma-separated list flag; setting it replaces the list
// (blank items dropped), so the last one given wins as for other flags.
type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(s string) error {
	*l.p = splitList(s)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func loadFile(path string, c *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return fmt.Errorf("config file %s is larger than %d bytes", path, maxFileBytes)
	}
	if err := Decode(data, c); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// Decode reads a JSON config over c, refusing unknown keys so a misspelt
// setting is an error instead of a silently ignored one.
func Decode(data []byte, c *Config) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("not a valid config: %w", err)
	}
	if dec.More() {
		return errors.New("not a valid config: data after the JSON object")
	}
	return nil
}

// Validate checks the settings and says what to fix.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("-data must name a directory")
	}
	if _, err := c.Location(); err != nil {
		return err
	}
	if c.Language != "zh-CN" && c.Language != "en" {
		return fmt.Errorf("-language %q: the pages have zh-CN and en", c.Language)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("-listen %q is not host:port (e.g. :8080 or 127.0.0.1:0): %w", c.Listen, err)
	}
	if a := c.HTTPSAddr(); a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("-https-listen %q is not host:port (e.g. :8443) or off: %w", c.HTTPSListen, err)
		}
		if a == c.Listen && !strings.HasSuffix(a, ":0") {
			return fmt.Errorf("-https-listen and -listen are both %s; give HTTPS its own port", a)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("-tls-cert and -tls-key go together: give both or neither")
	}
	if c.Cloud != "" {
		u, err := url.Parse(c.Cloud)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("-cloud %q must be an http(s) URL such as https://hub.city.example", c.Cloud)
		}
	}
	if c.CloudCA != "" {
		// Read here so a wrong file stops edged at start, not at the
		// first sync as an unknown authority.
		if _, err := certs.ReadRootsFile(c.CloudCA); err != nil {
			return fmt.Errorf("-cloud-ca: %w", err)
		}
	}
	if c.School == "" || len(c.School) > 32 || strings.ContainsAny(c.School, " =\x00\r\n") {
		return fmt.Errorf("-school %q must be 1-32 characters without spaces or '='", c.School)
	}
	// The DNS-SD instance name is cut from the name at 63 bytes on a
	// character boundary (discovery.InstanceName); a Chinese name of 22
	// characters is already 66 bytes, so the name itself may be longer.
	if len(c.SchoolName) > 255 || !utf8.ValidString(c.SchoolName) {
		return fmt.Errorf("-school-name must be valid UTF-8 of at most 255 bytes (it is %d)", len(c.SchoolName))
	}
	if err := c.validateDNS(); err != nil {
		return err
	}
	if c.ReconnectGrace < time.Second || c.ReconnectGrace > 10*time.Minute {
		return fmt.Errorf("-reconnect-grace %v must be 1s-10m", c.ReconnectGrace)
	}
	if c.SyncRate < 0 {
		return fmt.Errorf("-sync-rate %d must be 0 (no cap) or a number of bytes per second", c.SyncRate)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("-log-level %q must be debug, info, warn or error", c.LogLevel)
	}
	if c.FirmwareRoot != "" && c.FirmwareKeys == "" {
		return errors.New("-fw-root needs -fw-keys: the release public keys this edge trusts")
	}
	if c.FirmwareChannel != "stable" && c.FirmwareChannel != "beta" {
		return fmt.Errorf("-fw-channel %q must be stable or beta", c.FirmwareChannel)
	}
	if c.FirmwareWave < 1 || c.FirmwareWave > 1000 || c.FirmwareWaveInterval < 100*time.Millisecond {
		return errors.New("-fw-wave must be 1-1000 and -fw-wave-interval at least 100ms")
	}
	if c.MaxConnsPerAddr < 0 {
		return errors.New("-max-conns-per-addr must be 0 (no limit) or a positive number of connections")
	}
	if c.BodyDeadline < 100*time.Millisecond || c.BodyDeadline > 10*time.Minute {
		return errors.New("-body-deadline must be between 100ms and 10m")
	}
	if c.FirmwareRate < 0 {
		return errors.New("-fw-rate must be 0 (no cap) or a positive number of bytes per second")
	}
	if _, err := cache.ParseSize(c.CacheQuota); err != nil {
		return fmt.Errorf("-cache-quota: %w", err)
	}
	if _, err := cache.ParseSize(c.CacheUploadMax); err != nil {
		return fmt.Errorf("-cache-upload-max: %w", err)
	}
	if _, err := cache.ParseSchedule(c.CacheBandwidth); err != nil {
		return fmt.Errorf("-cache-bandwidth: %w", err)
	}
	if c.CachePrefetchDays < 1 || c.CachePrefetchDays > 60 {
		return fmt.Errorf("-cache-prefetch-days %d must be 1-60", c.CachePrefetchDays)
	}
	return nil
}

// Location is the school's time zone (TimeZone); the binary embeds the
// zone database, so it does not depend on the host's.
func (c Config) Location() (*time.Location, error) {
	loc, err := time.LoadLocation(c.TimeZone)
	if err != nil || c.TimeZone == "" {
		return nil, fmt.Errorf("-time-zone %q is not an IANA time zone such as Asia/Shanghai or Asia/Urumqi: %v", c.TimeZone, err)
	}
	return loc, nil
}

// validateDNS checks the unicast DNS-SD flags; the key file is read here
// so that a wrong one stops edged at start.
func (c Config) validateDNS() error {
	if c.DNSZone == "" {
		if c.DNSServer != "" || c.DNSTSIGKeyFile != "" {
			return errors.New("-dns-server and -dns-tsig-key-file need -dns-zone: the school's zone the edge registers in")
		}
		return nil
	}
	if !strings.HasSuffix(c.DNSZone, ".") || strings.ContainsAny(c.DNSZone, " \\") || len(c.DNSZone) > 200 {
		return fmt.Errorf("-dns-zone %q must be a fully qualified zone name ending in a dot, e.g. school.example.", c.DNSZone)
	}
	if (c.DNSServer == "") != (c.DNSTSIGKeyFile == "") {
		return errors.New("-dns-server and -dns-tsig-key-file go together: the school's DNS must take only signed updates (or give neither: the console then shows the records to add by hand)")
	}
	if c.DNSTSIGKeyFile != "" {
		if _, err := discovery.ReadTSIGKeyFile(c.DNSTSIGKeyFile); err != nil {
			return fmt.Errorf("-dns-tsig-key-file: %w", err)
		}
	}
	return nil
}
