"""Errors a user can fix: the entry prints their message alone, without a traceback, and exits 2."""


class TrainerError(Exception):
    """A problem in the user's config, data or environment, explained with its fix."""


class ConfigError(TrainerError):
    """A config key holds a value the run cannot use."""


class DataValidationError(TrainerError):
    """Rows of the dataset break the rules; the message lists them with file and line."""


class StageNotBuilt(TrainerError):
    """The flow reached a stage that does not exist yet: stop instead of pretending."""

    def __init__(self, stage: str, issue: int) -> None:
        super().__init__(
            f"stage '{stage}' is not built yet (tracked in issue #{issue}); the stages before it are done "
            f"and kept. Run fewer stages with stages=[...] to stop before it."
        )
        self.stage = stage


class JobFailed(Exception):
    """One job of a sweep stopped; raised instead of exiting so that Hydra records it and goes on."""

    def __init__(self, exit_code: int, reason: str) -> None:
        super().__init__(exit_code, reason)  # both in args, so it survives pickling (Ray, submitit)
        self.exit_code = exit_code
        self.reason = reason

    def __str__(self) -> str:
        return f"exit {self.exit_code}: {self.reason}"
