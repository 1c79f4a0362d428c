"""A deployed app's current revision as the platform holds it: its spec and the
live changes made to it since (`tidal apps scale`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidal.spec import AppOptions, AppSpec


@dataclass
class AppRecord:
    owner: str
    name: str
    revision: int
    spec: AppSpec
    created_at: float
    updated_at: float
    scaling_overrides: dict[str, Any] = field(default_factory=dict)
    # Callable without an API key (each deploy says; private unless `--public`).
    public: bool = False

    # (spec, overrides, options): the options last computed, and from what.
    _options: tuple[AppSpec, dict[str, Any], AppOptions] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def options(self) -> AppOptions:
        """The revision's options with live changes from `tidal apps scale` applied.

        Kept until the spec or the overrides change: the controller and the router read
        them on every decision, and a pydantic copy each time was most of the cost."""
        cached = self._options
        if cached is not None and cached[0] is self.spec and cached[1] == self.scaling_overrides:
            return cached[2]
        changes = {k: v for k, v in self.scaling_overrides.items() if k not in LIMIT_FIELDS}
        options = self.spec.options.model_copy(update=changes)
        self._options = (self.spec, dict(self.scaling_overrides), options)
        return options

    @property
    def max_waiting(self) -> int | None:
        """Sync callers the app lets wait for a slot (None: the platform's
        `max_waiting_per_app`); a platform setting, not one of fal's options."""
        value = self.scaling_overrides.get("max_waiting")
        return value if isinstance(value, int) else None

    @property
    def queue_results(self) -> int | None:
        """Finished queue results the app keeps, newest first (None: the platform's
        `queue_results_per_app`)."""
        value = self.scaling_overrides.get("queue_results_per_app")
        return value if isinstance(value, int) else None


# Live settings of the platform's own (not in fal's option table), set like scaling
# options (`tidal apps scale NAME --max-waiting N --queue-results N`), with their bounds.
LIMIT_FIELDS = {"max_waiting": (1, 100_000), "queue_results_per_app": (1, 1_000_000)}
