// Command payload is a stand-in firmware for tests: a tiny server that
// behaves like edged's health surface. Its behaviour comes from files next
// to the executable, so one build serves as many "versions" as a test
// bundles: "version" (reported at /version) and "mode":
//
//	ok     serve /healthz as healthy at once
//	slow   wait 1.5 s, then as ok
//	hang   serve /healthz with 503 forever (never healthy)
//	crash  exit 3 at once
//
// Every start appends "VERSION MODE PID" to DATA/starts.log.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "addr")
	data := flag.String("data", ".", "dir")
	flag.Bool("mdns", false, "ignored")
	flag.Parse()
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	read := func(n string) string {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(exe), n))
		return strings.TrimSpace(string(b))
	}
	version, mode := read("version"), read("mode")
	if f, err := os.OpenFile(filepath.Join(*data, "starts.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "%s %s %d\n", version, mode, os.Getpid())
		f.Close()
	}
	switch mode {
	case "crash":
		fmt.Fprintln(os.Stderr, "payload: crashing on purpose")
		os.Exit(3)
	case "slow":
		time.Sleep(1500 * time.Millisecond)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "payload:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if mode == "hang" {
			http.Error(w, `{"status":"starting"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"ok","checks":{"store":{"ok":true}}}`)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, version) })
	go http.Serve(ln, mux)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}
