// Command cityhub is the city cloud's side of CampusEdge: sync, the
// catalogue origin that school edges sync micro-lessons from, the firmware
// release channel and the city CA that signs school edges' certificates.
//
//	cityhub -data DIR -listen ADDR        serve over HTTP, and HTTPS on -https-listen
//	cityhub -data DIR import FOLDER       register every file under FOLDER
//	cityhub -data DIR tls-pin             print the pin of the hub's TLS key
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/campusedge/campusedge/sync/catalog"
	"github.com/campusedge/campusedge/sync/hubtls"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run is main without the process: ready, if set, gets the bound
// addresses (https is nil with -https-listen off).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(plain, https net.Addr)) int {
	fs := flag.NewFlagSet("cityhub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./hubdata", "data `dir`: hub.db and blobs; created on first start")
	listen := fs.String("listen", ":8090", "HTTP listen `addr`; with 127.0.0.1:0 a free port is picked and logged")
	tf := addTLSFlags(fs)
	dbURL := fs.String("db", "", "sync store: empty for DATA/sync.db (bbolt), or a `postgres://` URL shared by several cityhub replicas")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  cityhub [flags]                 serve the catalogue and sync\n  cityhub [flags] import FOLDER   register media files, print ID<TAB>PATH\n%s\nFlags:\n", syncUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	rest := fs.Args()
	if len(rest) == 1 && rest[0] == "tls-pin" {
		pin, err := tf.pin(*data)
		if err != nil {
			fmt.Fprintln(stderr, "cityhub tls-pin:", err)
			return 1
		}
		fmt.Fprintln(stdout, pin)
		return 0
	}
	if len(rest) > 0 && syncCommands[rest[0]] {
		sst, err := openSyncStore(ctx, *data, *dbURL)
		if err != nil {
			fmt.Fprintln(stderr, "cityhub:", err)
			return 1
		}
		defer sst.Close()
		return runSync(ctx, sst, rest, stdout, stderr, func() (string, error) { return tf.pin(*data) })
	}
	if len(rest) > 0 && rest[0] != "import" {
		fmt.Fprintf(stderr, "cityhub: unknown command %q (want import FOLDER)\n", rest[0])
		return 2
	}
	if len(rest) > 0 && len(rest) != 2 {
		fmt.Fprintln(stderr, "cityhub: usage: cityhub -data DIR import FOLDER")
		return 2
	}
	st, err := catalog.Open(*data)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	defer st.Close()
	if len(rest) == 2 {
		n := 0
		err := st.Import(rest[1], func(im catalog.Imported) {
			n++
			fmt.Fprintf(stdout, "%s\t%s\n", im.Item.ID, im.Path)
		})
		if err != nil {
			fmt.Fprintln(stderr, "cityhub import:", err)
			return 1
		}
		log.Info("import done", "items", n, "folder", rest[1])
		return 0
	}

	sst, err := openSyncStore(ctx, *data, *dbURL)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	defer sst.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "cityhub: listen on %s: %v (choose another with -listen)\n", *listen, err)
		return 1
	}
	httpsAddr, err := tf.httpsAddr(*listen)
	if err != nil {
		_ = ln.Close()
		fmt.Fprintln(stderr, "cityhub:", err)
		return 2
	}
	ca, err := tf.cityCA(*data, log)
	if err != nil {
		_ = ln.Close()
		fmt.Fprintln(stderr, "cityhub: city CA:", err)
		return 1
	}
	handler, err := withFirmware(*data, hubHandler(catalog.Handler(st, log), sst, ca, log), log)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "data", *data)
	var tlsAddr net.Addr
	var hss *http.Server
	if httpsAddr != "" {
		src, err := tf.serving(*data, log)
		if err != nil {
			_ = hs.Close()
			fmt.Fprintln(stderr, "cityhub: TLS:", err)
			return 1
		}
		tln, err := net.Listen("tcp", httpsAddr)
		if err != nil {
			_ = hs.Close()
			fmt.Fprintf(stderr, "cityhub: listen on %s: %v (choose another with -https-listen, or -https-listen off)\n", httpsAddr, err)
			return 1
		}
		hss = &http.Server{Handler: handler, TLSConfig: hubtls.ServerConfig(src.GetCertificate),
			ReadHeaderTimeout: hs.ReadHeaderTimeout, IdleTimeout: hs.IdleTimeout, ErrorLog: hs.ErrorLog}
		go func() { errc <- hss.ServeTLS(tln, "", "") }()
		tlsAddr = tln.Addr()
		pin, _ := hubtls.Pin(src.Current())
		log.Info("listening https", "addr", tlsAddr.String(), "pin", pin, "not_after", src.Current().Leaf.NotAfter.Format(time.RFC3339))
	} else {
		log.Warn("HTTPS is off (-https-listen off): edges cannot authenticate this hub unless a TLS proxy in front of it serves the pinned key")
	}
	if ready != nil {
		ready(ln.Addr(), tlsAddr)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("HTTP server stopped", "err", err)
		return 1
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if hss != nil {
		_ = hss.Shutdown(sctx)
	}
	return 0
}
