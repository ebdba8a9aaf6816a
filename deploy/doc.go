// Package deploy holds podnet's deployment artifacts and, in its tests, their
// checks: kubernetes/ (RBAC and the DaemonSet, decoded strictly into the
// Kubernetes API types, cross-checked with podnetd's flags, the Dockerfile and
// each other), systemd/ (the unit, through systemd-analyze, and its example
// configurations), and the repository's Dockerfile (its build commands run,
// their binaries checked to be static). deploy/dryrun applies the manifests to a
// real API server with server-side dry run.
package deploy
