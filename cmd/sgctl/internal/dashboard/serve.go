package dashboard

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// shutdownGrace is how long Serve, once its context ends, waits for the
// requests in flight before it closes their connections.
const shutdownGrace = 5 * time.Second

// Serve serves the dashboard on ln until ctx ends or serving fails. When
// ctx ends it stops accepting, closes idle connections, waits up to 5s for
// the requests in flight (the live streams end when Run returns: cancel
// both with the same context) and closes what is left; it then returns nil.
// A failure to accept is returned. ln is closed either way.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
