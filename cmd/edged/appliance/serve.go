package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// serve starts HTTP (and HTTPS) on the bound listeners, advertises the
// edge over DNS-SD and tells the caller it is ready.
func (a *appliance) serve(ctx context.Context, opts Options) error {
	cfg, log := a.cfg, a.log
	handler, limit := a.hostileLimits()
	a.hs = &http.Server{
		Handler:           plainHTTP{next: handler, httpsPort: a.httpsPort, redirect: cfg.HTTPSRedirect},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext:       httpapi.ConnContext, // /media corks the connection (httpapi.Cork)
	}
	a.serveErr = make(chan error, 2)
	fast := cfg.MediaFastPath && a.rc != nil
	var served func()
	if fast {
		// The route's counter, as the mux counts its answers.
		served = a.srv.RequestCounter("GET /media/{id}", http.StatusOK).Inc
		// /media's plain whole-file requests are answered below net/http
		// (edge/cache/fastpath.go); everything else reaches a.hs.
		fl := a.rc.FastListener(limit.Listener(a.ln), cache.FastPathConfig{Server: a.hs, Served: served})
		a.fast = append(a.fast, fl)
		go func() { a.serveErr <- a.hs.Serve(fl) }()
	} else {
		go func() { a.serveErr <- a.hs.Serve(limit.Listener(a.ln)) }()
	}
	log.Info("listening", "addr", a.ln.Addr().String(), "edge_id", a.id.ID, "version", buildinfo.Version)
	if a.tln != nil {
		a.hss = &http.Server{
			Handler:           handler,
			TLSConfig:         a.tm.TLSConfig(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			ConnContext:       httpapi.ConnContext,
		}
		go a.tm.Run(ctx)
		if fast {
			// The fast path does the handshakes; HTTP/2 connections and
			// requests it does not answer go to a.hss, which has HTTP/2
			// because its TLSConfig offers "h2" (net/http sets it up in
			// Serve then). Each side has its own copy of the config:
			// net/http adjusts its own.
			a.hss.Handler = httpapi.RestoreTLS(handler)
			tcfg := a.tm.TLSConfig()
			fl := a.rc.FastListener(limit.Listener(a.tln), cache.FastPathConfig{Server: a.hss, TLS: tcfg.Clone(), Served: served})
			a.fast = append(a.fast, fl)
			go func() { a.serveErr <- a.hss.Serve(fl) }()
		} else {
			// ServeTLS (not Serve on a tls listener) so that HTTP/2 is set up.
			go func() { a.serveErr <- a.hss.ServeTLS(limit.Listener(a.tln), "", "") }()
		}
		st := a.tm.Status()
		log.Info("listening https", "addr", a.tln.Addr().String(), "certificate", st.Source, "spki_pin", st.Pin, "fingerprint", st.Fingerprint)
	}

	if cfg.MDNS {
		adv, err := discovery.Advertise(ctx, discovery.Config{
			Instance:   discovery.InstanceName(a.schoolName),
			Port:       a.port,
			Info:       discovery.Info{Version: "1", EdgeID: a.id.ID, School: cfg.School, API: "/api/v1", HTTPSPort: a.httpsPort},
			Interfaces: cfg.MDNSInterfaces,
			Logger:     log.With("component", "discovery"),
		})
		if err != nil {
			_ = a.hs.Close()
			if a.hss != nil {
				_ = a.hss.Close()
			}
			return fmt.Errorf("DNS-SD: %w", err)
		}
		a.advp.Store(adv)
	} else {
		log.Info("DNS-SD advertisement off (-mdns=false); terminals need -edge URL", "url", edgeURL(a.port, a.httpsPort))
	}
	if err := a.startDNSRegistration(ctx); err != nil {
		_ = a.hs.Close()
		if a.hss != nil {
			_ = a.hss.Close()
		}
		return fmt.Errorf("unicast DNS-SD: %w", err)
	}
	if opts.Ready != nil {
		opts.Ready(a.ln.Addr())
	}
	if opts.ReadyTLS != nil && a.tln != nil {
		opts.ReadyTLS(a.tln.Addr(), a.tm)
	}
	return nil
}

// hostileLimits are what keeps one LAN device from exhausting the edge
// at the connection level: a deadline on every request body (uploads:
// a stall limit instead) and a bound on connections per client address,
// each counted in /metrics.
func (a *appliance) hostileLimits() (http.Handler, httpapi.ConnLimit) {
	cut := prometheus.NewCounter(prometheus.CounterOpts{Name: "campusedge_http_body_timeouts_total",
		Help: "Request bodies cut off by their read deadline (-body-deadline)."})
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "campusedge_http_connections_refused_total",
		Help: "Connections refused because their address had -max-conns-per-addr open."})
	a.srv.Registry().MustRegister(cut, refused)
	h := httpapi.BodyDeadlines{Deadline: a.cfg.BodyDeadline, Cut: cut.Inc,
		// Teacher uploads are the edge's only long bodies.
		Long: func(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Path == "/api/v1/media" },
	}.Wrap(a.srv)
	return h, httpapi.ConnLimit{PerAddr: a.cfg.MaxConnsPerAddr, ExemptLoopback: true, Refused: refused.Inc}
}

// shutdown stops serving in order: control connections closed, listeners
// closed and in-flight requests finished, then the DNS-SD goodbye. The
// capabilities and the store close after it, when Run returns.
func (a *appliance) shutdown() {
	log := a.log
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Stop accepting and finish in-flight requests; hijacked WebSockets are
	// not tracked by Shutdown, so close them explicitly (terminals reconnect).
	a.srv.CloseControl()
	if err := a.hs.Shutdown(shutCtx); err != nil {
		log.Warn("HTTP shutdown incomplete", "err", err)
	}
	if a.hss != nil {
		if err := a.hss.Shutdown(shutCtx); err != nil {
			log.Warn("HTTPS shutdown incomplete", "err", err)
		}
	}
	// Shutdown closed the fast paths' listeners (and their idle
	// connections); wait for the responses they are still sending.
	for _, fl := range a.fast {
		if err := fl.Wait(shutCtx); err != nil {
			log.Warn("/media fast path shutdown incomplete", "err", err)
		}
	}
	if adv := a.advp.Load(); adv != nil {
		if err := adv.Close(); err != nil {
			log.Warn("DNS-SD goodbye", "err", err)
		} else {
			log.Info("DNS-SD goodbye sent")
		}
	}
	if reg := a.regp.Load(); reg != nil {
		_ = reg.Close() // removes the records from the school's zone; logs why not
	}
}

// edgeURL is the address terminals are told to use: HTTPS when it is on.
func edgeURL(port, httpsPort int) string {
	if httpsPort != 0 {
		return "https://<this host>:" + strconv.Itoa(httpsPort)
	}
	return "http://<this host>:" + strconv.Itoa(port)
}
