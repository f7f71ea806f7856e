// Package fleettest holds the tests and benchmarks of the library at fleet
// scale, against real redis-server processes: an instance through a Sentinel
// failover and a Redis Cluster failover (failover_test.go), the Redis cost of
// an idle instance (idle_test.go), and a restart storm of 1,000 instances with
// and without the boot jitter (storm_test.go). It has no code of its own: it
// imports the library as its users do, through service.New and the
// registry and controlops packages.
//
//	go test ./internal/fleettest                                    # the failover tests (~15s)
//	go test -run '^$' -bench . -benchtime 1x ./internal/fleettest   # every figure of BENCHMARKS.md made here
package fleettest
