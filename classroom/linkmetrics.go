package classroom

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/sfu"
)

// linkCollector reports the subscribers' links per simulcast layer: how
// many take each layer, and their mean budget, gcc target and loss.
// Labels are the layer's position (0 the lowest, "none" for a subscriber
// with no layered video), never a subscriber id: a school's hundreds of
// screens would make a series each.
type linkCollector struct {
	sfu                        *sfu.SFU
	subs, budget, target, loss *prometheus.Desc
	switches, probes           *prometheus.Desc
	svc                        *prometheus.Desc
}

func newLinkCollector(s *sfu.SFU) *linkCollector {
	l := []string{"layer"}
	return &linkCollector{sfu: s,
		subs:     prometheus.NewDesc("campusedge_live_layer_subscribers", "Subscribers taking each simulcast layer (0 the lowest; none: no layered video).", l, nil),
		budget:   prometheus.NewDesc("campusedge_live_layer_link_budget_bits", "Mean link budget (bits/s) of the subscribers on each layer: what their link was shown to carry.", l, nil),
		target:   prometheus.NewDesc("campusedge_live_layer_link_estimate_bits", "Mean send-side bandwidth estimate (gcc, bits/s) of the subscribers on each layer.", l, nil),
		loss:     prometheus.NewDesc("campusedge_live_layer_link_loss_ratio", "Mean loss ratio (TWCC feedback) of the subscribers on each layer.", l, nil),
		switches: prometheus.NewDesc("campusedge_live_layer_switches_total", "Subscribers moved to another simulcast layer.", []string{"direction"}, nil),
		probes:   prometheus.NewDesc("campusedge_live_layer_probes_total", "Padding probes that tested a subscriber's link before moving it up.", nil, nil),
		svc: prometheus.NewDesc("campusedge_live_svc_subscribers", "Subscribers of a layered single-encoding camera (VP9 SVC, or VP8 with temporal layers, counted at spatial 0) by the spatial and temporal layer they get now (0 the lowest; 0-7 each).",
			[]string{"spatial", "temporal"}, nil),
	}
}

func (c *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.subs, c.budget, c.target, c.loss, c.switches, c.probes, c.svc} {
		ch <- d
	}
}

func layerLabel(l int) string {
	switch {
	case l < 0:
		return "none"
	case l >= 3:
		return "3+"
	}
	return strconv.Itoa(l)
}

func (c *linkCollector) Collect(ch chan<- prometheus.Metric) {
	type agg struct {
		n                    int
		budget, target, loss float64
	}
	by := map[string]*agg{}
	for _, lbl := range []string{"none", "0", "1", "2"} {
		by[lbl] = &agg{}
	}
	for _, l := range c.sfu.AllLinks() {
		a := by[layerLabel(l.Layer)]
		if a == nil {
			a = &agg{}
			by[layerLabel(l.Layer)] = a
		}
		a.n++
		a.budget += float64(l.Budget)
		a.target += float64(l.Target)
		a.loss += l.Loss
	}
	for lbl, a := range by {
		ch <- prometheus.MustNewConstMetric(c.subs, prometheus.GaugeValue, float64(a.n), lbl)
		n := float64(max(a.n, 1))
		ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, a.budget/n, lbl)
		ch <- prometheus.MustNewConstMetric(c.target, prometheus.GaugeValue, a.target/n, lbl)
		ch <- prometheus.MustNewConstMetric(c.loss, prometheus.GaugeValue, a.loss/n, lbl)
	}
	t := c.sfu.Totals()
	ch <- prometheus.MustNewConstMetric(c.switches, prometheus.CounterValue, float64(t.LayerUps), "up")
	ch <- prometheus.MustNewConstMetric(c.switches, prometheus.CounterValue, float64(t.LayerDowns), "down")
	ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(t.Probes))
	for k, n := range c.sfu.SVCLayers() {
		ch <- prometheus.MustNewConstMetric(c.svc, prometheus.GaugeValue, float64(n), strconv.Itoa(k[0]), strconv.Itoa(k[1]))
	}
}
