package classroom

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"sync"

	qrcode "github.com/skip2/go-qrcode"
)

// roomCodes gives each classroom a short code its big screen shows, by
// which an assistant's phone finds the classroom (typed, or in the QR
// code's URL). A code only points at a classroom: what the assistant may
// do there comes from their own sign-in. Codes live as long as edged;
// classrooms are bounded by the fleet, so the maps are too. A code used
// during a session is kept with the session's live state (keep, restore)
// so that after an edge restart the big screen shows the same code and an
// assistant's page joins again with the code it was opened with.
type roomCodes struct {
	mu     sync.Mutex
	byRoom map[string]string
	byCode map[string]string
	qrs    map[string]string // URL → data: URL of its PNG (the host differs by how the screen reached the edge)
	kept   map[string]bool   // session + "\x1f" + classroom whose code is stored
}

func newRoomCodes() *roomCodes {
	return &roomCodes{byRoom: map[string]string{}, byCode: map[string]string{}, qrs: map[string]string{}, kept: map[string]bool{}}
}

// restore gives cid its code stored with session sid again (at start),
// unless cid already has one or the code went to another room. It is
// marked kept: the screens' first polls after a restart write nothing.
func (c *roomCodes) restore(sid, cid, code string) {
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, has := c.byRoom[cid]; has {
		if have == code {
			c.kept[sid+"\x1f"+cid] = true
		}
		return
	}
	c.kept[sid+"\x1f"+cid] = true
	if _, taken := c.byCode[code]; taken {
		return
	}
	c.byRoom[cid], c.byCode[code] = code, cid
}

// keep stores cid's code with session sid once (put writes it through).
// A failure is only logged by put: the code still works until a restart.
func (c *roomCodes) keep(sid, cid, code string, put func(sid, kind, name string, v any) error) {
	k := sid + "\x1f" + cid
	c.mu.Lock()
	done := c.kept[k]
	c.mu.Unlock()
	if done || put(sid, docCode, cid, code) != nil {
		return
	}
	c.mu.Lock()
	if len(c.kept) > 4096 { // sessions end; forget the oldest marks wholesale
		clear(c.kept)
	}
	c.kept[k] = true
	c.mu.Unlock()
}

// code returns cid's code, making one the first time.
func (c *roomCodes) code(cid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.byRoom[cid]; ok {
		return k
	}
	for {
		n, _ := rand.Int(rand.Reader, big.NewInt(1_000_000))
		k := fmt.Sprintf("%06d", n.Int64())
		if _, taken := c.byCode[k]; !taken {
			c.byRoom[cid], c.byCode[k] = k, cid
			return k
		}
	}
}

// classroom returns the classroom a code names.
func (c *roomCodes) classroom(code string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cid, ok := c.byCode[code]
	return cid, ok
}

// qr returns url as a PNG QR code in a data: URL (the pages' CSP allows
// data: images), "" if it cannot be made.
func (c *roomCodes) qr(url string) string {
	c.mu.Lock()
	if q, ok := c.qrs[url]; ok {
		c.mu.Unlock()
		return q
	}
	c.mu.Unlock()
	png, err := qrcode.Encode(url, qrcode.Medium, 256)
	if err != nil {
		return ""
	}
	q := "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.qrs) > 1000 { // one per classroom and address it was reached by; a bound, not a cache policy
		clear(c.qrs)
	}
	c.qrs[url] = q
	return q
}
