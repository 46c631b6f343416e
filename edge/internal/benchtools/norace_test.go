//go:build !race

package benchtools

const raceEnabled = false
