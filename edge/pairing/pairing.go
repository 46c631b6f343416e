// Package pairing binds a classroom terminal's pairing to the edge's TLS key
// with CPace (draft-irtf-cfrg-cpace), a balanced PAKE, over ristretto255.
//
// Why a PAKE: a terminal has no CA to trust the edge's certificate with, so
// it learns the edge's key (its pin) at pairing. The only secret the admin
// gives it is the 6-digit pairing code, which is low-entropy: a plain HMAC
// of the pin keyed by the code lets a device that intercepts one exchange
// try all 10^6 codes offline in about a second and then substitute its own
// key. With CPace the code only ever enters a hash-to-group generator;
// what crosses the wire is an ephemeral Diffie-Hellman share that reveals
// nothing about the code, so an interceptor gets one online guess per
// exchange, and the edge counts each failed exchange toward its lock-out.
//
// The channel identifier is "campusedge-pair-v1" and the TLS pin as each
// side sees it: the terminal uses the pin of the certificate it was served,
// the edge the pin of its own key. A proxy that terminates TLS with its own
// key makes the two differ, so the derived keys differ and key confirmation
// fails even when the proxy relays every byte.
//
// The flow this package implements: the terminal (initiator, A) sends
// sid and Ya; the edge (responder, B) answers Yb; both derive the
// intermediate session key ISK from K = y*Y' and the transcript; A sends
// its confirmation tag first, and B sends its own tag (and the sealed
// credential) only after checking A's. Two deliberate differences from the
// draft's ristretto255 suite: the generator is hash_to_ristretto255 (RFC
// 9380 expand_message_xmd with SHA-512, as circl's HashToElement does) of
// the draft's generator string, with the suite's DSI as domain separation
// tag, instead of the draft's one-way map of SHA-512; and the associated
// data is empty. Both ends are this package, so interoperability with the
// draft's test vectors is not a goal; its security argument is unchanged.
package pairing

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cloudflare/circl/group"
)

// Sizes on the wire.
const (
	SIDSize   = 16 // session id chosen by the terminal
	ShareSize = 32 // encoded ristretto255 element
	TagSize   = 64 // HMAC-SHA-512 confirmation tag
)

// Protocol is the protocol label that starts the channel identifier.
const Protocol = "campusedge-pair-v1"

const dsi = "CPaceRistretto255"

// Errors.
var (
	ErrBadShare = errors.New("pairing: the peer's share is not a valid ristretto255 element")
	ErrConfirm  = errors.New("pairing: key confirmation failed")
)

var g = group.Ristretto255

// ChannelID is CPace's CI for a TLS pin: lv_cat(Protocol, pin).
func ChannelID(pin string) []byte {
	return lvCat([]byte(Protocol), []byte(pin))
}

// Party is one side's ephemeral secret for one exchange. It is used once.
type Party struct {
	initiator bool
	sid       []byte
	y         group.Scalar
	share     []byte
}

// NewParty derives the generator from the code, the channel identifier and
// sid, and picks a fresh secret scalar. rnd is crypto/rand.Reader outside
// tests.
func NewParty(rnd io.Reader, initiator bool, code string, ci, sid []byte) (*Party, error) {
	if len(sid) != SIDSize {
		return nil, fmt.Errorf("pairing: sid must be %d bytes", SIDSize)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	gen := g.HashToElement(generatorString(code, ci, sid), []byte(dsi))
	y := g.RandomNonZeroScalar(rnd)
	share, err := g.NewElement().Mul(gen, y).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("pairing: encode share: %w", err)
	}
	return &Party{initiator: initiator, sid: append([]byte(nil), sid...), y: y, share: share}, nil
}

// Share is this side's public share (Ya or Yb).
func (p *Party) Share() []byte { return append([]byte(nil), p.share...) }

// Finish combines the peer's share with this side's secret. It refuses an
// invalid or identity share (a peer could otherwise force K to a value it
// knows without knowing the code).
func (p *Party) Finish(peerShare []byte) (*Session, error) {
	peer, err := DecodeShare(peerShare)
	if err != nil {
		return nil, err
	}
	k := g.NewElement().Mul(peer, p.y)
	if k.IsIdentity() {
		return nil, ErrBadShare
	}
	kb, err := k.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("pairing: encode K: %w", err)
	}
	ya, yb := p.share, peerShare
	if !p.initiator {
		ya, yb = peerShare, p.share
	}
	h := sha512.New()
	h.Write(lvCat([]byte(dsi+"_ISK"), p.sid, kb))
	h.Write(lvCat(ya, nil)) // ADa is empty
	h.Write(lvCat(yb, nil)) // ADb is empty
	s := &Session{initiator: p.initiator, sid: p.sid, ya: append([]byte(nil), ya...), yb: append([]byte(nil), yb...)}
	h.Sum(s.isk[:0])
	return s, nil
}

// Session is the outcome of one exchange: the shared key and the two
// confirmation tags. Until the peer's tag is verified it is not known to
// share the key with anyone.
type Session struct {
	initiator bool
	sid       []byte
	ya, yb    []byte
	isk       [64]byte
}

func (s *Session) derive(label string) []byte {
	h := sha512.New()
	h.Write(lvCat([]byte(label), s.sid, s.isk[:]))
	return h.Sum(nil)
}

func (s *Session) tag(share []byte) []byte {
	m := hmac.New(sha512.New, s.derive("CPaceMac"))
	m.Write(lvCat(share, nil))
	return m.Sum(nil)
}

// MyTag is the confirmation tag this side sends.
func (s *Session) MyTag() []byte {
	if s.initiator {
		return s.tag(s.ya)
	}
	return s.tag(s.yb)
}

// VerifyPeer checks the peer's confirmation tag in constant time.
func (s *Session) VerifyPeer(tag []byte) error {
	want := s.tag(s.yb)
	if !s.initiator {
		want = s.tag(s.ya)
	}
	if len(tag) != TagSize || !hmac.Equal(tag, want) {
		return ErrConfirm
	}
	return nil
}

func (s *Session) aead() cipher.AEAD {
	block, err := aes.NewCipher(s.derive("campusedge-seal")[:32])
	if err != nil {
		panic(err) // 32-byte key: cannot fail
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return a
}

// Seal encrypts and authenticates msg under the session key, so that what
// the edge hands over (the terminal's credential) can be neither read nor
// altered by anything between the two ends.
func (s *Session) Seal(msg []byte) []byte {
	a := s.aead()
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(msg)+a.Overhead())
	_, _ = rand.Read(nonce)
	return a.Seal(nonce, nonce, msg, []byte(Protocol+" sealed"))
}

// Open reverses Seal.
func (s *Session) Open(box []byte) ([]byte, error) {
	a := s.aead()
	if len(box) < a.NonceSize()+a.Overhead() {
		return nil, errors.New("pairing: sealed message too short")
	}
	msg, err := a.Open(nil, box[:a.NonceSize()], box[a.NonceSize():], []byte(Protocol+" sealed"))
	if err != nil {
		return nil, fmt.Errorf("pairing: sealed message does not authenticate: %w", err)
	}
	return msg, nil
}

// DecodeShare parses an encoded element strictly: exactly 32 bytes, the
// canonical encoding, not the identity.
func DecodeShare(b []byte) (group.Element, error) {
	if len(b) != ShareSize {
		return nil, ErrBadShare
	}
	e := g.NewElement()
	if err := e.UnmarshalBinary(b); err != nil {
		return nil, ErrBadShare
	}
	if e.IsIdentity() {
		return nil, ErrBadShare
	}
	if re, err := e.MarshalBinary(); err != nil || !hmac.Equal(re, b) {
		return nil, ErrBadShare
	}
	return e, nil
}

// generatorString is the draft's lv_cat(DSI, PRS, zero_bytes(len_zpad),
// CI, sid), the padding putting DSI and PRS alone in SHA-512's first block.
func generatorString(prs string, ci, sid []byte) []byte {
	const sInBytes = 128
	zpad := sInBytes - 1 - len(prependLen([]byte(prs))) - len(prependLen([]byte(dsi)))
	if zpad < 0 {
		zpad = 0
	}
	return lvCat([]byte(dsi), []byte(prs), make([]byte, zpad), ci, sid)
}

// prependLen is the draft's prepend_len: LEB128 length, then the data.
func prependLen(b []byte) []byte {
	out := binary.AppendUvarint(make([]byte, 0, len(b)+3), uint64(len(b)))
	return append(out, b...)
}

func lvCat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, prependLen(p)...)
	}
	return out
}
