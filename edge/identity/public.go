package identity

// Public returns the edge's ed25519 public key bytes (what sync enrols).
func (i *Identity) Public() []byte { return i.PublicKey }
