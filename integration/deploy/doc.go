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
//     serves metrics without keys and is given time to drain.
//
// A test whose tool is missing skips and says how to get it; a tool named
// by its variable (SOLOIST_PROMTOOL, SOLOIST_SYSTEMD_ANALYZE,
// SOLOIST_DOCKER_COMPOSE, as .ci/run sets them) must exist. The
// Kubernetes manifests are checked by the module in ./kubernetes, which
// has the Kubernetes API types.
package deploy
