package classroom

// Cascade links as people see them: for every school pulling a lesson from
// this edge (downstream) and every lesson this edge pulls from another
// (upstream), the link's state, the send-side estimate the upstream edge's
// gcc makes of it, the layer it carries, its loss and whether the video is
// paused, and since when. GET /api/v1/cascade/links serves it to the
// console's "Cascade links" panel, and /metrics has it per link.
//
// The upstream edge is the one that knows the link: it sends, so its TWCC
// feedback gives the estimate and the loss, and its layer chooser picks
// what the link carries. The downstream edge asks it, with the pull's own
// token, at its WHEP resource (GET /whep/{session}/{resource}/link), and adds
// what it measures itself (the rate that arrives).

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

const (
	// cascadeLinkEvery: how often a link's view is refreshed (a served
	// link's pause and layer times; a pull's question to its upstream).
	cascadeLinkEvery = 2 * time.Second
	// maxLinkBody bounds the upstream's answer about a link.
	maxLinkBody = 4 << 10
)

// Directions of a cascade link, seen from this edge.
const (
	LinkUpstream   = "upstream"   // this edge pulls its lesson from the peer
	LinkDownstream = "downstream" // the peer (another school) pulls from this edge
)

// CascadeLink is one cascade link as this edge sees it.
type CascadeLink struct {
	Direction string `json:"direction"` // LinkUpstream or LinkDownstream
	Session   string `json:"session"`   // the session here
	// Peer names the other side: the pulling school's code (downstream),
	// or the upstream edge's host.
	Peer string `json:"peer"`
	// State is "connected", "reconnecting" (the link dropped; it is being
	// brought back) or "connecting" (never connected yet); Since when.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Measured: the estimate, layer and loss below are known (an upstream
	// edge that does not answer about its side leaves them out).
	Measured bool `json:"measured"`
	// EstimateKbps is the upstream edge's send-side bandwidth estimate
	// of the link: gcc's (GCCKbps, from TWCC feedback), but no more than
	// 1.5× what the link delivered over the last seconds plus 10 kbit/s,
	// as libwebrtc bounds its own: on a link not filled (a lesson of
	// 600 kbit/s on a 1 Mbit/s link) gcc's figure keeps growing with
	// nothing to show the link carries it. 0 until gcc runs (once the
	// lesson's video arrives as simulcast layers).
	EstimateKbps int64 `json:"estimate_kbps"`
	GCCKbps      int64 `json:"gcc_kbps"`
	// BudgetKbps is what the layer chooser has seen the link carry.
	BudgetKbps int64 `json:"budget_kbps"`
	// ReceiveKbps (upstream links only) is what arrives here over the
	// link, media and control together, over the last few seconds.
	ReceiveKbps int64 `json:"receive_kbps,omitempty"`
	// Quality is the layer the link carries: "h" (the top layer), "m",
	// "l" (the lowest), or "" when the lesson has a single layer.
	Quality  string     `json:"quality"`
	Layer    int        `json:"layer"`  // its position, 0 the lowest
	Layers   int        `json:"layers"` // how many layers the lesson has (0: no video yet)
	RID      string     `json:"rid,omitempty"`
	Width    int        `json:"width,omitempty"`
	Height   int        `json:"height,omitempty"`
	LayerAt  *time.Time `json:"layer_since,omitempty"`
	LossPct  float64    `json:"loss_pct"`
	Paused   bool       `json:"paused"`
	PausedAt *time.Time `json:"paused_since,omitempty"`
}

// qualityOf names layer position pos of n: h, m or l.
func qualityOf(pos, n int) string {
	switch {
	case n <= 1:
		return ""
	case pos >= n-1:
		return "h"
	case pos <= 0:
		return "l"
	}
	return "m"
}

// linkTimes keeps since when a link has had its layer and its pause.
type linkTimes struct {
	layerKey string
	layerAt  time.Time
	pausedAt time.Time
}

// note updates t from l at now and writes the times into l.
func (t *linkTimes) note(l *CascadeLink, now time.Time) {
	key := l.RID + "/" + qualityOf(l.Layer, l.Layers)
	if l.Layers == 0 {
		key = ""
	}
	if key != t.layerKey {
		t.layerKey, t.layerAt = key, now
	}
	if key != "" {
		at := t.layerAt
		l.LayerAt = &at
	}
	switch {
	case !l.Paused:
		t.pausedAt = time.Time{}
	case t.pausedAt.IsZero():
		t.pausedAt = now
	}
	if l.Paused {
		at := t.pausedAt
		l.PausedAt = &at
	}
}

// servedLinks are the schools pulling lessons from this edge: WHEP
// subscribers that named their school (?school=).
type servedLinks struct {
	mu   sync.Mutex
	byID map[string]*servedLink // by WHEP resource id
}

type servedLink struct {
	sess, school, owner string
	sub                 *sfu.Subscriber

	mu      sync.Mutex
	state   string
	stateAt time.Time
	times   linkTimes
	// What the link delivered (sent less the TWCC loss) over the last
	// window, kbit/s; -1 before the first window.
	lastTx        uint64
	lastAt        time.Time
	deliveredKbps int64
}

// sample measures what the link delivered since the last sample.
func (l *servedLink) sample(now time.Time) {
	tx, loss := l.sub.SentBytes(), l.sub.Link().Loss
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := now.Sub(l.lastAt).Seconds(); !l.lastAt.IsZero() && d > 0 {
		l.deliveredKbps = int64(float64(tx-l.lastTx) * 8 / 1000 / d * (1 - min(max(loss, 0), 1)))
	}
	l.lastTx, l.lastAt = tx, now
}

func newServedLinks() *servedLinks { return &servedLinks{byID: map[string]*servedLink{}} }

// add tracks sub, a pull by school, until it closes.
func (s *servedLinks) add(sess, school, owner string, sub *sfu.Subscriber) {
	l := &servedLink{sess: sess, school: school, owner: owner, sub: sub, stateAt: time.Now().UTC(), deliveredKbps: -1}
	l.sample(time.Now())
	s.mu.Lock()
	s.byID[sub.ID()] = l
	s.mu.Unlock()
	go func() {
		tick := time.NewTicker(cascadeLinkEvery)
		defer tick.Stop()
		for {
			select {
			case <-sub.Done():
				s.mu.Lock()
				delete(s.byID, sub.ID())
				s.mu.Unlock()
				return
			case now := <-tick.C:
				l.sample(now)
				l.view() // keeps the state, layer and pause times current
			}
		}
	}()
}

// get returns the link of WHEP resource id in session sess.
func (s *servedLinks) get(sess, id string) *servedLink {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byID[id]; l != nil && l.sess == sess {
		return l
	}
	return nil
}

func (s *servedLinks) all() []*servedLink {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*servedLink, 0, len(s.byID))
	for _, l := range s.byID {
		out = append(out, l)
	}
	return out
}

// view is the link now, from the SFU's layer chooser.
func (l *servedLink) view() CascadeLink {
	now := time.Now().UTC()
	k := l.sub.Link()
	v := CascadeLink{Direction: LinkDownstream, Session: l.sess, Peer: l.school, Measured: true,
		GCCKbps: k.Target / 1000, BudgetKbps: k.Budget / 1000, LossPct: k.Loss * 100, Paused: k.VideoPaused}
	if vl, ok := l.sub.VideoLayer(); ok {
		v.Layer, v.Layers, v.RID, v.Width, v.Height = vl.Layer, vl.Layers, vl.RID, vl.Width, vl.Height
		v.Quality = qualityOf(vl.Layer, vl.Layers)
	}
	st := "connecting"
	switch l.sub.ConnState() {
	case "connected":
		st = "connected"
	case "disconnected", "failed":
		st = "reconnecting" // the SFU restarts its ICE for a while
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v.EstimateKbps = v.GCCKbps
	if l.deliveredKbps >= 0 {
		v.EstimateKbps = min(v.GCCKbps, l.deliveredKbps*3/2+10)
	}
	if st == "connecting" && l.state != "" && l.state != "connecting" {
		st = "reconnecting"
	}
	if st != l.state {
		l.state, l.stateAt = st, now
	}
	v.State, v.Since = l.state, l.stateAt
	l.times.note(&v, now)
	return v
}

// upLink is what a pull knows of its link, kept on its upstream.
type upLink struct {
	measured bool
	view     CascadeLink // the upstream edge's answer
	rxKbps   int64
	times    linkTimes
}

// watchLink asks the upstream edge about this pull's link (its WHEP
// resource at location) every cascadeLinkEvery and measures what arrives,
// until ctx ends.
func (u *upstream) watchLink(ctx context.Context, received func() uint64, location string) {
	tick := time.NewTicker(cascadeLinkEvery)
	defer tick.Stop()
	lastRx, lastAt := received(), time.Now()
	for {
		select {
		case <-ctx.Done():
			u.mu.Lock()
			u.link = upLink{times: u.link.times}
			u.mu.Unlock()
			return
		case now := <-tick.C:
			rx := received()
			kbps := int64(float64(rx-lastRx) * 8 / 1000 / now.Sub(lastAt).Seconds())
			lastRx, lastAt = rx, now
			v, err := u.askLink(ctx, location)
			u.mu.Lock()
			u.link.rxKbps = kbps
			u.link.measured = err == nil
			if err == nil {
				u.link.view = v
			} else if ctx.Err() == nil {
				u.log.Debug("cascade: the upstream edge did not say how it sees the link", "err", err)
			}
			u.mu.Unlock()
		}
	}
}

// askLink GETs the upstream edge's view of this pull's link.
func (u *upstream) askLink(ctx context.Context, location string) (CascadeLink, error) {
	var v CascadeLink
	ctx, cancel := context.WithTimeout(ctx, cascadeProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(location, "/")+"/link", nil)
	if err != nil {
		return v, err
	}
	req.Header.Set("Authorization", "Bearer "+u.req.Token)
	resp, err := u.client.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxLinkBody))
	if err != nil {
		return v, err
	}
	if resp.StatusCode != http.StatusOK {
		return v, &httpStatusError{resp.Status}
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return v, err
	}
	return v, nil
}

type httpStatusError struct{ status string }

func (e *httpStatusError) Error() string { return "the upstream edge answered " + e.status }

// cascadeView is this pull's link as the console shows it.
func (u *upstream) cascadeView(now time.Time) CascadeLink {
	st := u.status()
	u.mu.Lock()
	defer u.mu.Unlock()
	v := CascadeLink{Direction: LinkUpstream, Session: u.sess, Peer: u.req.URL}
	if p, err := url.Parse(u.req.URL); err == nil {
		v.Peer = p.Host
	}
	if u.link.measured {
		w := u.link.view
		v.Measured, v.EstimateKbps, v.GCCKbps, v.BudgetKbps = true, w.EstimateKbps, w.GCCKbps, w.BudgetKbps
		v.Layer, v.Layers, v.RID, v.Width, v.Height = w.Layer, w.Layers, w.RID, w.Width, w.Height
		v.Quality = qualityOf(w.Layer, w.Layers)
		v.LossPct, v.Paused = w.LossPct, w.Paused
	}
	v.ReceiveKbps = u.link.rxKbps
	switch {
	case st.State == "connected":
		v.State = "connected"
	case st.Connects > 0:
		v.State = "reconnecting"
	default:
		v.State = "connecting"
	}
	v.Since = u.stateAt
	u.link.times.note(&v, now)
	return v
}

// cascadeLinks lists every cascade link of this edge, upstream first.
func (l *Live) cascadeLinks() []CascadeLink {
	now := time.Now().UTC()
	out := []CascadeLink{}
	l.cascades.mu.Lock()
	ups := make([]*upstream, 0, len(l.cascades.bySession))
	for _, u := range l.cascades.bySession {
		ups = append(ups, u)
	}
	l.cascades.mu.Unlock()
	for _, u := range ups {
		out = append(out, u.cascadeView(now))
	}
	for _, s := range l.served.all() {
		out = append(out, s.view())
	}
	slices.SortFunc(out, func(a, b CascadeLink) int {
		if c := strings.Compare(b.Direction, a.Direction); c != 0 { // upstream first
			return c
		}
		if c := strings.Compare(a.Session, b.Session); c != 0 {
			return c
		}
		return strings.Compare(a.Peer, b.Peer)
	})
	return out
}

// registerCascadeLinks mounts the routes and the metrics.
func (l *Live) registerCascadeLinks(srv *api.Server, reg *prometheus.Registry) {
	srv.HandleFunc("GET /api/v1/cascade/links", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"links": l.cascadeLinks()})
	})
	srv.HandleFunc("GET /whep/{session}/{resource}/link", withCORS(l.whepLink))
	reg.MustRegister(newCascadeCollector(l))
}

// whepLink: GET /whep/{session}/{resource}/link with the token that made the
// WHEP resource answers how this edge sees that pull's link. Only a pull
// that named its school (a downstream edge) has one.
func (l *Live) whepLink(w http.ResponseWriter, r *http.Request) {
	g, ok := l.authorize(w, r, false)
	if !ok {
		return
	}
	s := l.served.get(g.SessionID, r.PathValue("resource"))
	tok, _ := httpapi.BearerToken(r)
	if s == nil || (s.owner != tokenKey(tok) && g.Role != session.RoleMaster) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no cascade pull with this resource id made with this token (a pull names its school with ?school= when it is made)")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.view())
}

// cascadeCollector reports each cascade link in /metrics, labelled by
// direction and peer (a school has a handful of links, never hundreds).
type cascadeCollector struct {
	l                                                  *Live
	up, estimate, budget, receive, layer, loss, paused *prometheus.Desc
}

func newCascadeCollector(l *Live) *cascadeCollector {
	lb := []string{"direction", "session", "peer"}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, lb, nil) }
	return &cascadeCollector{l: l,
		up:       d("campusedge_cascade_link_connected", "1 while the cascade link's media connection is up, 0 while it reconnects."),
		estimate: d("campusedge_cascade_link_estimate_bits", "Send-side bandwidth estimate (gcc, bits/s) of the cascade link, made by the upstream edge."),
		budget:   d("campusedge_cascade_link_budget_bits", "What the upstream edge's layer chooser has seen the cascade link carry (bits/s)."),
		receive:  d("campusedge_cascade_link_receive_bits", "What arrives over the cascade link at this (downstream) edge, bits/s."),
		layer:    d("campusedge_cascade_link_layer", "Simulcast layer the cascade link carries (0 the lowest; -1 no video)."),
		loss:     d("campusedge_cascade_link_loss_ratio", "Loss ratio of the cascade link (the upstream edge's TWCC feedback)."),
		paused:   d("campusedge_cascade_link_video_paused", "1 while the cascade link's video is paused (below the lowest layer; audio continues)."),
	}
}

func (c *cascadeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.estimate, c.budget, c.receive, c.layer, c.loss, c.paused} {
		ch <- d
	}
}

func (c *cascadeCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, k := range c.l.cascadeLinks() {
		lv := []string{k.Direction, k.Session, k.Peer}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		g(c.up, b(k.State == "connected"))
		if k.Direction == LinkUpstream {
			g(c.receive, float64(k.ReceiveKbps*1000))
		}
		if !k.Measured {
			continue
		}
		g(c.estimate, float64(k.EstimateKbps*1000))
		g(c.budget, float64(k.BudgetKbps*1000))
		layer := float64(k.Layer)
		if k.Layers == 0 {
			layer = -1
		}
		g(c.layer, layer)
		g(c.loss, k.LossPct/100)
		g(c.paused, b(k.Paused))
	}
}
