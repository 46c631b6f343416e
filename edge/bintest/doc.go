// Package bintest builds the project's binaries and runs them as separate
// processes for tests and benchmarks: edged, cityhub and classterm started
// the way an operator starts them, their stderr kept and scanned for the
// "msg=listening addr=…" line every CampusEdge binary logs, so a test finds
// the address a binary picked with -listen 127.0.0.1:0, waits for a log
// line, signals the process and reads its exit code. It is a test helper:
// only tests and test-helper packages import it.
package bintest
