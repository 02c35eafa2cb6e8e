"""The project's own test Kubernetes API server (issue 3, section 5), in one place.

Real HTTP on 127.0.0.1, driven only through the official `kubernetes` client; never a mock
of the client.  Start it with the `kube_server` fixture (tests/kubeserver_fixtures.py) or
`KubeServer(...).start()`.

SCOPE -- everything it serves, nothing else:
- apps/v1 deployments, statefulsets (+ `scale`, `status` subresources); autoscaling/v2
  horizontalpodautoscalers (+ `status`); coordination.k8s.io/v1 leases; core/v1 pods
  (+ `status`), events, configmaps, secrets; keda.sh/v1alpha1 scaledobjects (custom objects
  API, + `status`); authentication.k8s.io/v1 tokenreviews and authorization.k8s.io/v1
  subjectaccessreviews (create only, answered, not stored).  Namespaces exist implicitly.
- Verbs: get, list, watch (any type: `?watch=true` with resourceVersion, timeoutSeconds,
  labelSelector, fieldSelector; newline-delimited events over chunked HTTP, ended at
  min(timeoutSeconds, max_watch_s); an expired resourceVersion gives an ERROR event with
  410 Expired), create (201), update/PUT, patch, delete (200; pods and custom objects
  answer with the object, the rest with a Success Status; DeleteOptions preconditions
  honoured).  Label selectors: full grammar; field selectors: `=`, `==`, `!=` on any path.
  Lists ignore `limit`/`continue` (one page).  Not served: deletecollection, server-side
  apply (`application/apply-patch+yaml` -> 415), `dryRun` (-> 400), bookmarks, protobuf.
- Patches: strategic merge, JSON merge (RFC 7386) and JSON patch (RFC 6902), then the WHOLE
  result is validated; strategic merge on a custom object -> 415, as a real server answers.
  The strategic-merge subset is documented in `patching.py`.
- Validation (`validation.py`): strict Kubernetes SCHEMA_VERSION (1.27) JSON schemas from
  `kubernetes-validate` (unknown fields rejected), the KEDA CRD schema from tests/data/crds/
  for ScaledObjects, plus the apiserver rules our code depends on; failure -> 422 Invalid
  with a Status whose message and details.causes[].field name the field.
- Concurrency: a global resourceVersion counter, uid, creationTimestamp (from the server's
  `clock`), generation (bumped when anything but metadata/status changes); stale
  resourceVersion on update/patch -> 409 Conflict; existing name on create -> 409
  AlreadyExists; missing object -> 404 NotFound; custom-object PUT without a
  resourceVersion -> 422 (real servers forbid unconditional CR updates).  With a status
  subresource, writes to the main resource keep the stored status.
- Defaults applied: Deployment/StatefulSet spec.replicas 1, HPA spec.minReplicas 1, Pod
  status.phase Pending.  No controllers run (a test may play one via `Store.add_listener`).
- Auth (`rbac.py`): bearer tokens -> users (401 Unauthorized when missing or unknown);
  ADMIN_TOKEN (system:masters) may do anything; CONTROLLER_TOKEN is the ServiceAccount
  system:serviceaccount:predictive-autoscaler:predictive-autoscaler, authorized ONLY by the
  Roles/ClusterRoles and bindings in manifests/base/rbac.yaml; otherwise 403 Forbidden.
  Tests may add tokens, bindings (`policy.bind`) and allowed tuples (`policy.allow`), which
  also answer SubjectAccessReviews; TokenReviews answer from the token table.
- Seeding (`seeding.py`): builders for valid objects, and `seed*` helpers writing straight
  to the store (no RBAC, still validated), e.g. a Deployment with pods whose PodScheduled and
  Ready conditions turned True at chosen times.

Modules: routing (URL -> request info), rbac, handlers (the verbs), storage (store and
watch history), patching, validation, selectors, scale, status (errors), seeding, server
(HTTP and lifecycle).
"""

from .rbac import ADMIN_TOKEN, CONTROLLER_TOKEN, CONTROLLER_USER, RbacPolicy, UserInfo
from .resources import BY_KIND, RESOURCE_TYPES, ResourceType
from .server import DEFAULT_RBAC_PATH, KubeServer
from .storage import Store
from .validation import SCHEMA_VERSION

__all__ = [
    "ADMIN_TOKEN",
    "BY_KIND",
    "CONTROLLER_TOKEN",
    "CONTROLLER_USER",
    "DEFAULT_RBAC_PATH",
    "RESOURCE_TYPES",
    "SCHEMA_VERSION",
    "KubeServer",
    "RbacPolicy",
    "ResourceType",
    "Store",
    "UserInfo",
]
