// Package deploy holds Levee's deployment files and the tests that check
// them; it has no code of its own.
//
//   - kubernetes/: a kustomization (smtpd, worker and web Deployments,
//     Services, PodDisruptionBudgets, the ConfigMap, and the KEDA
//     ScaledObject that scales the workers on the consumer's lag);
//   - nats/: values for the official NATS Helm chart (3-node JetStream);
//   - prometheus/: alerting rules; grafana/: a dashboard;
//   - Dockerfile: the image the manifests run.
//
// The tests render the kustomization with kustomize's own library, decode
// every object strictly into the Kubernetes API types, check the
// invariants that keep mail safe (termination grace longer than Levee's
// drain deadline, probes, selectors, KEDA's target), parse every PromQL
// expression, and check each levee_* metric they name against the ones
// Levee's sources (the parent directory) really register.
//
// It is a Go module of its own, so that k8s.io/api, kustomize and the
// PromQL parser never enter the dependency graph of Levee itself. Run its
// tests with `cd deploy && go test ./...`.
package deploy
