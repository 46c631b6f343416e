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
	"strings"
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
	LogLevel       string   `json:"log_level"`
	// SyncRate caps the uplink's upload in bytes per second (0: no cap).
	SyncRate int `json:"sync_rate"`
}

// Defaults are the embedded defaults: `edged` with no flags runs on them.
func Defaults() Config {
	return Config{DataDir: "./data", Listen: ":8080", School: "school", MDNS: true, LogLevel: "info"}
}

// maxFileBytes bounds the config file; a config is a few hundred bytes.
const maxFileBytes = 1 << 20

// Parse builds the config from defaults, then the -config file, then the
// flags that were set explicitly, and validates the result.
func Parse(name string, args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := Defaults()
	var c Config
	var ifaces, file string
	fs.StringVar(&file, "config", "", "optional JSON config `file` (keys: data, listen, cloud, school, school_name, mdns, mdns_interfaces, log_level, sync_rate); flags override it")
	fs.StringVar(&c.DataDir, "data", d.DataDir, "data `dir`: store (edge.db), admin-token, blobs; created on first start")
	fs.StringVar(&c.Listen, "listen", d.Listen, "HTTP listen `addr`; with 127.0.0.1:0 a free port is picked and logged")
	fs.StringVar(&c.Cloud, "cloud", d.Cloud, "city cloud (cityhub) base `URL`; empty runs offline and sync waits")
	fs.StringVar(&c.School, "school", d.School, "school `code` as the city knows it (DNS-SD TXT school=)")
	fs.StringVar(&c.SchoolName, "school-name", d.SchoolName, "school `name` shown to people; the DNS-SD instance name (default \"CampusEdge <edge id>\")")
	fs.BoolVar(&c.MDNS, "mdns", d.MDNS, "advertise _campusedge._tcp by mDNS/DNS-SD")
	fs.StringVar(&ifaces, "mdns-interfaces", "", "comma-separated `interfaces` to advertise on (default: every up, multicast-capable interface)")
	fs.StringVar(&c.LogLevel, "log-level", d.LogLevel, "log `level`: debug, info, warn, error")
	fs.IntVar(&c.SyncRate, "sync-rate", d.SyncRate, "cap city sync uploads at this many `bytes` per second (0: no cap)")
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
	out := d
	if file != "" {
		if err := loadFile(file, &out); err != nil {
			return Config{}, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data":
			out.DataDir = c.DataDir
		case "listen":
			out.Listen = c.Listen
		case "cloud":
			out.Cloud = c.Cloud
		case "school":
			out.School = c.School
		case "school-name":
			out.SchoolName = c.SchoolName
		case "mdns":
			out.MDNS = c.MDNS
		case "mdns-interfaces":
			out.MDNSInterfaces = splitList(ifaces)
		case "log-level":
			out.LogLevel = c.LogLevel
		case "sync-rate":
			out.SyncRate = c.SyncRate
		}
	})
	return out, out.Validate()
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
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("-listen %q is not host:port (e.g. :8080 or 127.0.0.1:0): %w", c.Listen, err)
	}
	if c.Cloud != "" {
		u, err := url.Parse(c.Cloud)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("-cloud %q must be an http(s) URL such as https://hub.city.example", c.Cloud)
		}
	}
	if c.School == "" || len(c.School) > 32 || strings.ContainsAny(c.School, " =\x00\r\n") {
		return fmt.Errorf("-school %q must be 1-32 characters without spaces or '='", c.School)
	}
	if len(c.SchoolName) > 63 {
		return fmt.Errorf("-school-name is %d bytes; DNS-SD allows at most 63", len(c.SchoolName))
	}
	if c.SyncRate < 0 {
		return fmt.Errorf("-sync-rate %d must be 0 (no cap) or a number of bytes per second", c.SyncRate)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("-log-level %q must be debug, info, warn or error", c.LogLevel)
	}
	return nil
}
