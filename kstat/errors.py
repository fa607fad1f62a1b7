"""The exceptions kstat raises: one hierarchy, turned into a line and an exit code only by the CLI."""

from __future__ import annotations


class KstatError(Exception):
    """Base of every error kstat raises on purpose."""


class PermissionDenied(KstatError):
    """The kernel refused a bpf(2) command for lack of privilege (EPERM/EACCES)."""


class UnsupportedKernel(KstatError):
    """The running kernel lacks something kstat needs (bpf(2), run-time stats, a command)."""


class FeatureMissing(UnsupportedKernel):
    """This kernel lacks one feature kstat can do without or around (an iterator field, a
    helper, a bpf_prog_info member): every fallback catches this one error.

    `feature` names what is missing ("bpf_map_lookup_percpu_elem", "struct bpf_prog.stats"),
    `since` the kernel version that brought it ("5.19"), or None where that is not one version.
    """

    def __init__(self, feature: str, since: str | None, detail: str | None = None) -> None:
        brought = f" (since Linux {since})" if since else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"this kernel lacks {feature}{brought}{extra}")
        self.feature = feature
        self.since = since


class BpfError(KstatError):
    """A bpf(2) command failed in a way kstat does not expect; carries the errno."""

    def __init__(self, command: str, errno_value: int, message: str) -> None:
        super().__init__(f"bpf({command}) failed: {message}")
        self.command = command
        self.errno = errno_value


class ProgramLoadError(BpfError):
    """BPF_PROG_LOAD failed; carries the verifier's log when the kernel gave one."""

    def __init__(self, command: str, errno_value: int, message: str, verifier_log: str) -> None:
        super().__init__(command, errno_value, message)
        self.verifier_log = verifier_log


class OutputError(KstatError):
    """A report or stream cannot be written where the user asked."""


class OutputClosed(KstatError):
    """The reader of a stream went away (a closed pipe): the stream ends, which is no failure."""


class ExtraMissing(KstatError):
    """What was asked needs an optional dependency that is not installed: the message names the
    extra that brings it (`pip install 'kstat[plot]'`). A failure to run, not a usage error."""

    def __init__(self, needed_by: str, package: str, extra: str) -> None:
        super().__init__(f"{needed_by} needs {package}: pip install 'kstat[{extra}]'")
        self.package = package
        self.extra = extra


class UsageError(KstatError):
    """A flag or argument value is malformed (the CLI exits 2)."""


class SinkError(KstatError):
    """A sink cannot do its job; sink authors raise it so the failure reads as one clear line."""


class CommandNotRunnable(KstatError):
    """`kstat run`'s command cannot start; the CLI exits with the status a shell would give."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside a (nested) group, or None when it holds more than one.

    trio nurseries wrap every error in an ExceptionGroup; callers of kstat want the typed
    error itself when there is just one.
    """
    leaves: list[BaseException] = []

    def collect(exception: BaseException) -> None:
        if isinstance(exception, BaseExceptionGroup):
            for inner in exception.exceptions:
                collect(inner)
        else:
            leaves.append(exception)

    collect(group)
    return leaves[0] if len(leaves) == 1 else None
