// Command nginx stands in for the e2e tests' nginx image: it serves nginx's welcome
// page at / (404 elsewhere) on port 80, over IPv4 and IPv6, until stopped. SIGQUIT
// (the image's stop signal, nginx's graceful shutdown) lets requests in flight end
// for up to 10 s; SIGTERM and SIGINT stop at once, as nginx's fast shutdown. It
// accepts nginx's flags `-g DIRECTIVES` (ignored: the image runs `-g 'daemon off;'`)
// and `-v`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const page = `<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>
<p><em>Thank you for using nginx.</em></p>
</body>
</html>
`

func main() {
	fs := flag.NewFlagSet("nginx", flag.ExitOnError)
	fs.String("g", "", "global configuration directives (ignored)")
	showVersion := fs.Bool("v", false, "print the version and exit")
	addr := fs.String("listen", ":80", "address to serve on (not an nginx flag)")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("nginx version: podnet-stand-in/1.27.0")
		return
	}
	if err := run(*addr); err != nil {
		log.Fatal(err)
	}
}

// handler serves the welcome page at / and 404 elsewhere, as nginx's default site.
func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})
	return mux
}

func run(addr string) error {
	srv := &http.Server{Addr: addr, Handler: handler(), ReadHeaderTimeout: 10 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case sig := <-sigs:
		if sig != syscall.SIGQUIT {
			return srv.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}
}
