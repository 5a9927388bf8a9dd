// Package deploy tests the files of deploy/ with the tools their users run
// on them, as a user would, and checks that they agree with each other and
// with the documentation:
//
//   - deploy/prometheus: `promtool check rules`, `promtool test rules`
//     (rules_test.yml: each alert fires in one case and stays quiet in
//     another, all-nodes-down included) and `promtool check config`;
//     every alert has a summary, a description and a runbook_url that
//     points at its entry in docs/alerts.md;
//   - deploy/systemd: `systemd-analyze verify` of the unit, which is
//     Type=notify with a watchdog, and stops later than the drain ends;
//   - deploy/docker-compose.yml: `docker-compose config`, and each node
//     serves metrics without keys and is given time to drain;
//   - the Dockerfiles: the images the Docker tests run are the "runtime"
//     stage of each, built from binaries built here (nothing is pulled);
//   - the compose stack, run (TestComposeClusterDocker, from those images,
//     in a compose project of its own, removed with `down -v` even on
//     failure): Prometheus scrapes every node (up == 1) and evaluates the
//     rules; `docker kill` of a holder: another node holds its instance
//     within TTL + 2s under a larger fencing token; `docker network
//     disconnect` of a holder from etcd: its session ends at its
//     safe-until, another node takes over, and back it rejoins without an
//     older holding; `docker-compose restart` one node at a time: every
//     instance it held is handed over and no node counts a failover; one
//     etcd member stopped: starts keep completing. Every Countdown ends
//     with exactly its ticks: nothing lost or written twice.
//
// Docker tests have Docker or Compose in their names; without an engine
// they skip, and with SOLOIST_REQUIRE_DOCKER=1 (.ci/run) they fail.
//
// A test whose tool is missing skips and says how to get it; a tool named
// by its variable (SOLOIST_PROMTOOL, SOLOIST_SYSTEMD_ANALYZE,
// SOLOIST_DOCKER_COMPOSE, as .ci/run sets them) must exist. The
// Kubernetes manifests are checked by the module in ./kubernetes, which
// has the Kubernetes API types.
package deploy
