// Package e2e holds end-to-end tests that build and run the real edged and
// classterm binaries on loopback, the way an admin and a terminal use them.
package e2e
