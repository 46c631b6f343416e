package appliance_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// clientFrom is an HTTP client whose connections come from a given
// loopback address, as two devices on the LAN would.
func clientFrom(addr string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestPasswordGuessingSlowsOneAddress: 20 wrong passwords from one address
// against a real edge are refused "slow down" (429 with Retry-After) after
// the free tries, without the password being checked; meanwhile another
// teacher signs in normally from another address, and the guessing
// address is slowed even for a right password. Nothing locks the edge.
func TestPasswordGuessingSlowsOneAddress(t *testing.T) {
	e, _ := startPermEdge(t)
	signIn := func(c *http.Client, id, pw string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/api/v1/auth/signin", strings.NewReader(`{"id":"`+id+`","password":"`+pw+`"}`))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	guesser, teacher := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		// Different accounts, so the address is what slows down.
		id := []string{"t.owner", "t.other", "a.admin", "s.assist"}[i%4]
		code, retry := signIn(guesser, id, "guess-"+id)
		codes[code]++
		if code == http.StatusTooManyRequests && retry == "" {
			t.Error("429 without Retry-After")
		}
		// Another teacher, another device, in the middle of it all.
		if i == 15 {
			start := time.Now()
			if code, _ := signIn(teacher, "t.owner", "teacher-pass-1"); code != http.StatusOK {
				t.Errorf("another teacher from another address during the guessing: %d", code)
			}
			t.Logf("the other teacher signed in in %v", time.Since(start))
		}
	}
	if codes[http.StatusUnauthorized] != 10 || codes[http.StatusTooManyRequests] != 10 {
		t.Errorf("20 wrong tries from one address: %v, want 10 checked (401) and 10 slowed (429)", codes)
	}
	if code, _ := signIn(guesser, "t.other", "246810"); code != http.StatusTooManyRequests {
		t.Errorf("the right PIN from the slowed address: %d, want 429 (not even checked)", code)
	}
}
