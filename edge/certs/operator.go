package certs

import (
	"crypto/tls"
	"fmt"
	"os"
	"time"
)

// reloadOperator loads the operator's certificate and key when their files
// changed (checked at most every operatorCheck). At start (first) a bad
// file is an error; later the previous certificate stays in use and the
// problem shows in Status, so a half-written renewal never takes the edge
// off the air.
func (m *Manager) reloadOperator(first bool) error {
	m.mu.Lock()
	now := m.cfg.Now()
	if !first && now.Before(m.opNext) {
		m.mu.Unlock()
		return nil
	}
	m.opNext = now.Add(operatorCheck)
	old := m.opStamp
	m.mu.Unlock()

	stamp, err := fileStamp(m.cfg.OperatorCert, m.cfg.OperatorKey)
	if err == nil && stamp == old {
		return nil
	}
	var c tls.Certificate
	if err == nil {
		c, err = tls.LoadX509KeyPair(m.cfg.OperatorCert, m.cfg.OperatorKey)
	}
	if err == nil && now.After(c.Leaf.NotAfter) {
		err = fmt.Errorf("certificate %s expired on %s", m.cfg.OperatorCert, c.Leaf.NotAfter.Format(time.DateOnly))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("operator TLS certificate (-tls-cert %s, -tls-key %s): %w", m.cfg.OperatorCert, m.cfg.OperatorKey, err)
		m.opErr = err
		return err
	}
	m.operator, m.opStamp, m.opErr = &c, stamp, nil
	m.log.Info("operator TLS certificate loaded", "file", m.cfg.OperatorCert, "subject", c.Leaf.Subject.CommonName, "not_after", c.Leaf.NotAfter.Format(time.DateOnly), "fingerprint", Fingerprint(c.Leaf.Raw))
	return nil
}

func fileStamp(paths ...string) (string, error) {
	s := ""
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}
