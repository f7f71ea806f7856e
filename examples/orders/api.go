package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the API.
const (
	requestTimeout = 2 * time.Second  // each request's Redis calls
	apiShutdown    = 10 * time.Second // the requests in flight, once the API stops
)

// serveAPI serves the HTTP API on the listener OnStart bound until ctx
// ends: the instance stops (after any drain delay: the API serves through
// it, out of rotation) or the worker failed. Then it stops taking
// connections and lets the requests in flight finish, for up to
// apiShutdown. An error of Serve is the component's failure.
func (o *orders) serveAPI(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", o.create)
	mux.HandleFunc("GET /orders/{id}", o.get)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(o.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(o.ln) }() // awaited below, on every path
	select {
	case err := <-served:
		return fmt.Errorf("HTTP API on %s: %w", o.ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiShutdown)
	defer cancel()
	err := srv.Shutdown(sctx) // closes the listener: Serve returns at once
	<-served
	if err != nil {
		return fmt.Errorf("HTTP API on %s: finishing the requests in flight: %w", o.ln.Addr(), err)
	}
	o.log.Info("HTTP API stopped", "addr", o.ln.Addr().String())
	return nil
}

// order is what POST /orders takes.
type order struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// create takes an order: one XADD. 202 with the order's id (its stream
// entry's), 400 for a bad body, 503 when Redis does not answer.
func (o *orders) create(w http.ResponseWriter, r *http.Request) {
	var ord order
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&ord); err != nil || ord.Item == "" || ord.Qty < 1 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"item": "...", "qty": n} with n >= 1`})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id, err := o.rdb.XAdd(ctx, &redis.XAddArgs{Stream: o.stream, Values: []any{"item", ord.Item, "qty", ord.Qty}}).Result()
	if err != nil {
		o.log.Warn("order not taken", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "orders are not taken now"})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status": "accepted"})
}

// streamID is the form of a stream entry id.
var streamID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// get tells an order's status: processed (by which instance), accepted
// (in the stream, not processed yet), or 404.
func (o *orders) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !streamID.MatchString(id) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	by, err := o.rdb.HGet(ctx, o.processed, id).Result()
	if err == nil {
		writeJSON(w, http.StatusOK, map[string]string{"id": id, "status": "processed", "by": by})
		return
	}
	var found []redis.XMessage
	if errors.Is(err, redis.Nil) {
		found, err = o.rdb.XRange(ctx, o.stream, id, id).Result()
	}
	switch {
	case err != nil:
		o.log.Warn("order status not read", "order", id, "error", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "orders cannot be read now"})
	case len(found) == 0:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"id": id, "status": "accepted"})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
