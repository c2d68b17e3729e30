"""The one error hierarchy of sqlifier.

    SqlifierError                 anything sqlifier reports to a user on purpose
    ├── UserError                 bad input or a refused operation: exit code 1
    │   ├── DiagnosticsError      one or more positioned diagnostics (file:line:col)
    │   ├── NotAvailable          a command or action that is planned but not built yet
    │   ├── AnalysisError         lang.analysis: a canary cannot be judged by this analysis
    │   │                         expression (also a ValueError)
    │   ├── ReleaseError          delivery.releases: a release that cannot be made or found
    │   ├── Locked                delivery.locks: the service's lock is held by someone else
    │   ├── SecretError           secrets.errors: a secret that cannot be stored, found or
    │   │                         decrypted
    │   ├── LaunchError           runtime.process: an instance's command could not start
    │   ├── RouterFailed          platform.traffic: the data plane could not start
    │   ├── UnknownName           stack.expand: a `$NAME` in a service's run that names no
    │   │                         variable of the instance's environment
    │   ├── StateFileError        store.files: a state file sqlifier cannot use (damaged,
    │   │                         unreadable): the message names the file and what to do
    │   ├── AuditLogLost          store.audit: the audit log's entries are gone while its
    │   │                         head names some (a new log only by `sqlifier audit reset`)
    │   ├── IsolationError        runtime.netns: an instance cannot be isolated here (no
    │   │                         root, no namespaces, no nft) or a rule cannot be set
    │   ├── UserSwitchError       runtime.users: a service's `user` that cannot be used here
    │   ├── LockLost              platform.kubernetes.locks: a Lease lock held was taken or broken
    │   ├── NotLeader             platform.kubernetes.leader: a write only the leader may make
    │   ├── StateTooLarge         platform.kubernetes.state: more state than a ConfigMap holds
    │   ├── EntryTooLarge         platform.kubernetes.audit: an audit entry too large to keep
    │   ├── ClusterError          platform.kubernetes: a Kubernetes API call that failed,
    │   │   │                     naming the object and what to do
    │   │   ├── ClusterUnreachable  no answer from the API server, or no credentials
    │   │   ├── Forbidden         RBAC refuses a verb on a resource (both named)
    │   │   ├── NamespaceNotFound the environment's namespace does not exist
    │   │   ├── ApplyConflict     another field manager set fields sqlifier applies
    │   │   └── NotReady          a workload not ready in time: a pod, its events, logs
    │   └── AgentNotRunning       agent.client: no agent answers for this stack and env
    ├── ParseError                lang.errors: abandons one statement inside the parser,
    │                             which reports it as a Diagnostic
    └── (anything else)           a bug in sqlifier: exit code 2

Raised and handled inside sqlifier, each turned into a message, a decision or a retry where
it is caught (a caller that lets one escape has a bug):

    ValueError
    ├── CronError                 lang.cron: a schedule('...') that cannot be read
    ├── UndecodableError          lang.source: bytes that cannot be a rule file
    └── BadBody                   agent.requests: an API request body that does not match
                                  its schema (answered 400, naming the field)
    OSError
    └── _NotAFile                 stack.rulefiles: a rule path that is not a regular file
    Exception
    ├── NoData                    engine.compiled: a value a rule needs is missing
    ├── PlatformError             platform: an instance did not start or become ready
    ├── StartFailed               runtime.supervisor: a service did not become ready
    ├── ControlError              router.control: the data plane refused or was unreachable
    ├── HAProxyError              router.haproxy: HAProxy refused a configuration or command
    ├── BadMessage                router.h1: a message the proxy will not pass on
    ├── NotHttp                   runtime.http: bytes that are not an HTTP message
    │   ├── ClosedEarly           the connection closed before a byte of the answer
    │   └── TooLarge              a body longer than the caller allowed
    ├── _Late                     runtime.http: a request that did not arrive in time, or
    │                             whose connection was pushed out for a newer (408/503)
    ├── _Failure                  secrets.providers: a provider's failure, before wording
    ├── _Corrupt                  store.history: a chunk of history that does not decode
    ├── _Refused                  agent.deployer: a deploy or rollback request refused, with
    │   │                         nothing changed (answered with the reason, audited)
    │   └── _Withdrawn            its client went away while it waited for the lock
    ├── _Unreadable               agent.deployer: a schema revision that cannot be read
    ├── CertificateError          stack.tls: a certificate or key file the router cannot use
    │                             (a positioned error in check, a message in the data plane)
    └── FormatterBug              cli.fmt: formatting would change what rules mean (a bug:
                                  exit code 2, never written out)

Errors carry their context (file, line, column, service, release); only the CLI turns
them into messages and exit codes. `tests/test_errors.py` checks that this tree names every
exception class in the package.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlifier.diagnostics import Diagnostic

__all__ = ["DiagnosticsError", "NotAvailable", "SqlifierError", "UserError"]


class SqlifierError(Exception):
    """Base class of every error sqlifier raises on purpose."""


class UserError(SqlifierError):
    """Bad input or a refused operation; the message says what would be valid."""


class DiagnosticsError(UserError):
    """Input that failed validation, with every positioned diagnostic found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = self.diagnostics[0] if self.diagnostics else None
        super().__init__(first.headline() if first else "invalid input")


class NotAvailable(UserError):
    """A command or action that is planned but not built yet."""
