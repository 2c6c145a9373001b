// Package csi makes secretfs a provider of the Kubernetes Secrets Store CSI
// driver (sigs.k8s.io/secrets-store-csi-driver, provider API v1alpha1).
//
// The driver mounts a tmpfs into each pod that uses a SecretProviderClass
// and asks the provider on the node, over a unix socket, for the files:
// one Mount call per pod volume, repeated by kubelet (requiresRepublish)
// for rotation. The provider answers with the files and a version of each;
// the driver writes them with its atomic writer.
//
// The concepts:
//
//   - Request: one Mount, parsed (ParseMount). The class's "objects"
//     parameter lists the files: a secretfs reference ("aws:prod/db#pw")
//     or a template, a relative path and an optional mode. Every other
//     parameter the provider reads is named in Params; a bad one is
//     InvalidArgument with the parameter's name.
//   - Backend: a provider secretfs can offer pods, with the class
//     parameters that configure it and the one (Role) that gives a pod its
//     own identity at the backend: vaultRole (Kubernetes or JWT auth with
//     the pod's service-account token), awsRoleArn (web identity with that
//     token). A provider without a role falls back to the node's own
//     credentials only when the server allows it (--allow-node-credentials,
//     for single-tenant clusters).
//   - Identity: provider, namespace, service account and the provider's
//     class parameters. Each identity has its own engine (a cache.Cache in
//     front of its own provider instance, so its own login and token
//     renewal). A value fetched under one identity is served only to mounts
//     of that identity, and N pods of one identity on a node cost one
//     backend call per secret per TTL. Engines are bounded: MaxEntries
//     values each, MaxIdentities engines, the least recently used idle one
//     closed first, and any idle for IdleTimeout closed.
//   - Object versions: the backend's version where it has one (an AWS
//     VersionId; a Vault KV v2 version, with the field), otherwise an HMAC
//     of the content under a key of the process, never a plain hash: the
//     driver stores versions in SecretProviderClassPodStatus objects that
//     many may read.
//
// Errors are gRPC statuses: InvalidArgument, NotFound, PermissionDenied,
// Unavailable, DeadlineExceeded, ResourceExhausted (the files exceed the
// driver's gRPC limit), or Internal for anything unknown (logged). Messages
// name parameters and references, never values.
package csi
