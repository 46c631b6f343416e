// Package benchtools measures the appliance foundation for
// docs/BENCHMARKS.md: how fast edged starts, what it costs at rest, and what
// it costs to hold a school's worth of terminal control connections, each
// next to a floor measured in the same run: floorserver, a minimal Go server
// on the same endpoints built by the bench, and the data disk's fdatasync
// latency.
//
// The figures come from tests that skip unless their flag is set, so the
// normal test suite stays fast:
//
//	go test ./edge/internal/benchtools -run TestStartupBench -count=1 -v -startup-runs=20
//	go test ./edge/internal/benchtools -run TestControlBench -count=1 -v -timeout=20m -terminals=2000 -hold=60s
//
// -edged-src=DIR builds edged from another tree (say a `git archive HEAD`
// export) while the bench itself comes from this one; -spread=10s opens the
// held connections evenly over the ping period instead of in one burst; -tls
// holds the same connections a second time over wss:// to edged's HTTPS
// listener (its key pinned from the "listening https" log line) and compares
// TLS with plain in the same run.
//
// Run them without -race: the load generator lives in the test binary and a
// race-instrumented client would measure itself, not the edge. Both build
// edged and floorserver into a temporary directory, start them as separate
// processes listening on 127.0.0.1 only (edged with -mdns=false), and read
// their CPU time and memory from /proc (Linux only).
//
// TestPairAndConnect and BenchmarkPairAndConnect run the same client code
// against an in-process appliance and belong to the normal suite.
package benchtools
