// H264 profile matching: which profile a track or an SDP carries, so the
// edge refuses a High-profile lesson to a browser instead of sending
// pictures it cannot decode.

package sfu

import "strings"

// profileOf returns the profile_idc (two hex digits) of an H264 fmtp line.
func profileOf(fmtp string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "profile-level-id="); ok && len(v) >= 2 {
			return strings.ToLower(v[:2])
		}
	}
	return ""
}

// highProfile reports whether an H264 fmtp line names a profile other than
// Constrained Baseline/Baseline (42xxxx) or Main (4dxxxx).
func highProfile(fmtp string) bool {
	p := profileOf(fmtp)
	return p != "" && p != "42" && p != "4d"
}

// offersProfile reports whether an SDP lists an H264 format of profile_idc
// profile.
func offersProfile(sdp, profile string) bool {
	for _, l := range strings.Split(sdp, "\n") {
		if strings.HasPrefix(l, "a=fmtp:") && profileOf(strings.TrimSpace(l[strings.IndexByte(l, ' ')+1:])) == profile {
			return true
		}
	}
	return false
}
