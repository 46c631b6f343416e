package pairing

import (
	"crypto/rand"
	"testing"
)

// FuzzParse feeds anything to the decoders of all four messages: they must
// never panic, and what they accept must satisfy the invariants the
// handlers rely on.
func FuzzParse(f *testing.F) {
	p, _ := NewParty(rand.Reader, true, "123456", ChannelID("p"), make([]byte, SIDSize))
	share := Encode(p.Share())
	sid := Encode(make([]byte, SIDSize))
	tag := Encode(make([]byte, TagSize))
	for _, s := range []string{
		`{"sid":"` + sid + `","share":"` + share + `"}`,
		`{"session":"abcdefghijklmnopqrstuv","pin":"abc","shares":["` + share + `"]}`,
		`{"session":"abcdefghijklmnopqrstuv","confirm":["` + tag + `"],"name":"n","version":"v"}`,
		`{"confirm":"` + tag + `","credential":"AAAA"}`,
		`{"sid":"","share":""}`, `{}`, `[]`, `null`, ``, `{"shares":[null]}`,
		`{"sid":"` + sid + `","share":"` + Encode(make([]byte, 32)) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if sid, sh, err := ParseStart(data); err == nil {
			if len(sid) != SIDSize || len(sh) != ShareSize {
				t.Fatalf("start accepted sizes %d, %d", len(sid), len(sh))
			}
			if _, err := DecodeShare(sh); err != nil {
				t.Fatal("start accepted a bad share")
			}
		}
		if sess, shares, _, err := ParseStartResponse(data); err == nil {
			if !sessionRE.MatchString(sess) || len(shares) == 0 || len(shares) > MaxShares {
				t.Fatalf("start response accepted %q with %d shares", sess, len(shares))
			}
		}
		if _, tags, err := ParseFinish(data); err == nil {
			for _, tg := range tags {
				if len(tg) != TagSize {
					t.Fatal("finish accepted a short tag")
				}
			}
		}
		if tg, _, err := ParseFinishResponse(data); err == nil && len(tg) != TagSize {
			t.Fatal("finish response accepted a short tag")
		}
		if len(data) == ShareSize {
			if e, err := DecodeShare(data); err == nil && e.IsIdentity() {
				t.Fatal("identity accepted")
			}
		}
	})
}
