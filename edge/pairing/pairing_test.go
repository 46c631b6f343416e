package pairing

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func sid(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, SIDSize)
	_, _ = rand.Read(b)
	return b
}

// exchange runs one CPace exchange: terminal code/pin against edge code/pin.
func exchange(t *testing.T, termCode, termPin, edgeCode, edgePin string) (a, b *Session) {
	t.Helper()
	s := sid(t)
	pa, err := NewParty(nil, true, termCode, ChannelID(termPin), s)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := NewParty(nil, false, edgeCode, ChannelID(edgePin), s)
	if err != nil {
		t.Fatal(err)
	}
	if a, err = pa.Finish(pb.Share()); err != nil {
		t.Fatal(err)
	}
	if b, err = pb.Finish(pa.Share()); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestBothSidesAgree(t *testing.T) {
	a, b := exchange(t, "123456", "pinA", "123456", "pinA")
	if a.isk != b.isk {
		t.Fatal("ISK differs for the same code and pin")
	}
	if err := b.VerifyPeer(a.MyTag()); err != nil {
		t.Fatalf("edge rejects the terminal's tag: %v", err)
	}
	if err := a.VerifyPeer(b.MyTag()); err != nil {
		t.Fatalf("terminal rejects the edge's tag: %v", err)
	}
	if bytes.Equal(a.MyTag(), b.MyTag()) {
		t.Fatal("both directions use the same tag (reflection)")
	}
	msg := []byte(`{"token":"t-1.secret"}`)
	got, err := a.Open(b.Seal(msg))
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open sealed credential: %q, %v", got, err)
	}
	box := b.Seal(msg)
	box[len(box)-1] ^= 1
	if _, err := a.Open(box); err == nil {
		t.Fatal("an altered sealed credential opened")
	}
}

func TestWrongCodeFailsConfirmation(t *testing.T) {
	a, b := exchange(t, "123456", "pinA", "123457", "pinA")
	if err := b.VerifyPeer(a.MyTag()); !errors.Is(err, ErrConfirm) {
		t.Fatalf("edge accepted a wrong code: %v", err)
	}
	if err := a.VerifyPeer(b.MyTag()); !errors.Is(err, ErrConfirm) {
		t.Fatalf("terminal accepted a wrong code: %v", err)
	}
}

// A key-substituting proxy relays every byte, but the terminal sees the
// proxy's pin and the edge uses its own: the keys must differ.
func TestDifferentPinsFail(t *testing.T) {
	a, b := exchange(t, "123456", "proxy-pin", "123456", "edge-pin")
	if err := b.VerifyPeer(a.MyTag()); !errors.Is(err, ErrConfirm) {
		t.Fatalf("edge accepted a terminal that sees another key: %v", err)
	}
	if _, err := a.Open(b.Seal([]byte("x"))); err == nil {
		t.Fatal("credential opened across different pins")
	}
}

func TestDifferentSIDFail(t *testing.T) {
	pa, _ := NewParty(nil, true, "123456", ChannelID("p"), sid(t))
	pb, _ := NewParty(nil, false, "123456", ChannelID("p"), sid(t))
	a, _ := pa.Finish(pb.Share())
	b, _ := pb.Finish(pa.Share())
	if b.VerifyPeer(a.MyTag()) == nil {
		t.Fatal("sessions with different sids agree")
	}
}

func TestMalformedPointsRefused(t *testing.T) {
	p, err := NewParty(nil, true, "123456", ChannelID("p"), sid(t))
	if err != nil {
		t.Fatal(err)
	}
	nonCanonical := bytes.Repeat([]byte{0xff}, 32) // >= p: not a field element
	negative := make([]byte, 32)
	negative[0] = 1 // odd s: a negative field element, never a canonical encoding
	for name, share := range map[string][]byte{
		"identity":      make([]byte, 32),
		"short":         p.Share()[:31],
		"long":          append(p.Share(), 0),
		"empty":         nil,
		"non-canonical": nonCanonical,
		"negative":      negative,
	} {
		if _, err := p.Finish(share); !errors.Is(err, ErrBadShare) {
			t.Errorf("%s share: err = %v, want ErrBadShare", name, err)
		}
	}
	if _, err := NewParty(nil, true, "1", nil, []byte("short")); err == nil {
		t.Error("short sid accepted")
	}
}

func TestGeneratorStringPadding(t *testing.T) {
	// DSI and PRS with their length prefixes plus padding fill exactly
	// SHA-512's first block less one byte for the padding's own prefix.
	gs := generatorString("123456", ChannelID("x"), make([]byte, SIDSize))
	first := len(prependLen([]byte(dsi))) + len(prependLen([]byte("123456")))
	zpad := 128 - 1 - first
	if gs[first] != byte(zpad) || len(gs) != first+1+zpad+len(prependLen(ChannelID("x")))+len(prependLen(make([]byte, SIDSize))) {
		t.Fatalf("generator string layout: %x", gs)
	}
}

func TestParseMessages(t *testing.T) {
	p, _ := NewParty(nil, true, "123456", ChannelID("p"), sid(t))
	good := []byte(`{"sid":"` + Encode(make([]byte, SIDSize)) + `","share":"` + Encode(p.Share()) + `"}`)
	if _, _, err := ParseStart(good); err != nil {
		t.Fatalf("good start: %v", err)
	}
	for name, body := range map[string]string{
		"unknown field": `{"sid":"` + Encode(make([]byte, SIDSize)) + `","share":"` + Encode(p.Share()) + `","x":1}`,
		"identity":      `{"sid":"` + Encode(make([]byte, SIDSize)) + `","share":"` + Encode(make([]byte, 32)) + `"}`,
		"trailing":      string(good) + `{}`,
		"bad base64":    `{"sid":"` + Encode(make([]byte, SIDSize)) + `","share":"` + string(bytes.Repeat([]byte("!"), 44)) + `"}`,
	} {
		if _, _, err := ParseStart([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	many := `{"session":"abcdefghijklmnopqrstuv","pin":"x","shares":[`
	for i := range MaxShares + 1 {
		q, _ := NewParty(nil, false, "123456", ChannelID("p"), sid(t))
		if i > 0 {
			many += ","
		}
		many += `"` + Encode(q.Share()) + `"`
	}
	many += `]}`
	if _, _, _, err := ParseStartResponse([]byte(many)); err == nil {
		t.Error("more than MaxShares shares accepted")
	}
	dup := `{"session":"abcdefghijklmnopqrstuv","pin":"x","shares":["` + Encode(p.Share()) + `","` + Encode(p.Share()) + `"]}`
	if _, _, _, err := ParseStartResponse([]byte(dup)); err == nil {
		t.Error("duplicate shares accepted")
	}
}
