//go:build race

package benchtools

const raceEnabled = true
