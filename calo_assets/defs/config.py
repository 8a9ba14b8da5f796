"""The run config of a ledger build: every setting of `calo_assets.settings.OPTIONS`, as the launchpad shows them.

The fields, their defaults and their descriptions are made from `OPTIONS`, as the
CLI's flags are, so the two cannot drift apart; `to_settings` turns them into a
`Settings` the way the CLI does, refusing a bad value with a message naming it.
"""

import dagster as dg
from pydantic import Field, create_model

from calo_assets.settings import OPTIONS, Settings, SettingsError


def refuse(message: str) -> dg.Failure:
    """A failure that no retry can cure (a bad value): the step fails at once."""
    return dg.Failure(message, allow_retries=False)


class _Settings(dg.Config):
    """Money rules and anomaly thresholds of a ledger build (the findings and report inherit them)."""

    def to_settings(self) -> Settings:
        try:
            return Settings.from_options(self.model_dump())
        except SettingsError as exc:
            raise refuse(str(exc)) from None


AnalysisConfig = create_model(
    "AnalysisConfig", __base__=_Settings, __doc__=_Settings.__doc__,
    **{o.name: (o.kind, Field(default=o.default(), description=o.help[0].upper() + o.help[1:])) for o in OPTIONS})
