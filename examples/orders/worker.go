package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// writeTimeout bounds the write that records an order as processed.
const writeTimeout = 2 * time.Second

// work takes orders from the stream one at a time, as the consumer named by
// the instance id, and processes each: first the orders this consumer took
// and never acknowledged (a stop or a crash cut their work short), then new
// ones.
//
// It takes no new order once the instance begins to leave (Leaving: a stop
// or a restart asked for, before any drain delay) or ctx ends (the API
// failed): its blocking read ends at once then, because it reads through
// BlockingRedis, a client that the end of take closes (go-redis does not
// end a blocked read when its context is cancelled). The order in hand goes
// on under ctx, which lasts through the drain delay, and work returns nil.
//
// Processing an order writes its effect and its XACK in one MULTI/EXEC: an
// order is processed and acknowledged, or neither, whatever ends the
// process. Any other error of Redis fails the worker, and so the instance;
// the order in hand stays pending, for the next start.
func (o *orders) work(ctx context.Context) error {
	take, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	defer context.AfterFunc(o.in.Leaving(), func() { stop(context.Cause(o.in.Leaving())) })()
	rd := o.in.BlockingRedis(take)

	next, last := "0", "" // "0": this consumer's pending orders; ">": new ones
	for take.Err() == nil {
		res, err := rd.XReadGroup(take, &redis.XReadGroupArgs{
			Group: group, Consumer: o.in.ID(), Streams: []string{o.stream, next}, Count: 1, Block: o.block,
		}).Result()
		switch {
		case err == nil: // an order in hand, even if take ended meanwhile
		case take.Err() != nil:
			// The read was cut short: nothing was taken, or what Redis
			// delivered as the client closed stays pending.
			continue
		case errors.Is(err, redis.Nil):
			continue // BLOCK passed with no new order
		default:
			return fmt.Errorf("worker: reading %s as %s of group %s: %w", o.stream, o.in.ID(), group, err)
		}
		msgs := res[0].Messages
		if next == "0" && len(msgs) == 0 {
			next = ">"
			o.log.Info("worker: taking new orders", "stream", o.stream, "group", group, "block", o.block)
			continue
		}
		for _, m := range msgs {
			last = m.ID
			if err := o.process(ctx, m); err != nil {
				if ctx.Err() != nil {
					// Run's context ended before the order was done (a stop
					// with no drain delay, or a shorter one than the work).
					o.log.Warn("worker: stopped with an order in hand: it stays pending, for the next start", "order", m.ID)
					return nil
				}
				return err
			}
		}
	}
	o.log.Info("worker: stopped taking orders", "last", last, "why", context.Cause(take).Error())
	return nil
}

// process does an order's work (ORDERS_WORK long, under ctx), then records
// it: its effect, the processed record, and its XACK, atomically.
func (o *orders) process(ctx context.Context, m redis.XMessage) error {
	if o.workTime > 0 {
		t := time.NewTimer(o.workTime)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if _, err := o.rdb.TxPipelined(wctx, func(p redis.Pipeliner) error {
		p.HSet(wctx, o.processed, m.ID, o.in.ID())
		p.XAck(wctx, o.stream, group, m.ID)
		return nil
	}); err != nil {
		return fmt.Errorf("worker: recording order %s: %w", m.ID, err)
	}
	o.log.Debug("worker: order processed", "order", m.ID)
	return nil
}
