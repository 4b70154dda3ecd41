"""The release gate's settings (the rules themselves: components/recall_evaluator/gate.py)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Union

from core.features import OVERALL
from core.settings.base import Section, refuse_unknown, setting

GALLERIES = ("mixed", "within")
REGRESSION_TESTS = ("point", "significant", "non_inferiority")
BAR_TESTS = ("point", "interval")
_RENAMED_BAR_TESTS = {"lower_bound": "interval"}     # deprecated name -> current one
_REMOVED = {"min_group_queries": "groups are no longer skipped silently: a gated group needs "
                                 "`min_group_identities` identities, and `ungated_groups` exempts a group"}


@dataclasses.dataclass
class GateConfig(Section):
    ks: List[int] = setting(help="the K of Recall@K reported (1 is always there)",
                            factory=lambda: [1, 5])
    min_recall: float = setting(0.5, help="Recall@1 bar for every group (and overall)")
    min_recall_overall: Optional[float] = setting(None, help="overall Recall@1 bar; null: "
                                                  "min_recall")
    group_min_recall: Dict[str, float] = setting(help="a group's own Recall@1 bar, e.g. "
                                                 "{\"north\": 0.8}", factory=dict)
    max_drop: float = setting(0.02, help="allowed Recall@1 drop against the last blessed model")
    gallery: str = setting("mixed", help="the gated Recall@1: mixed (queries ranked against the "
                           "whole eval gallery) or within (against their own group)")
    regression_test: str = setting("significant", help="how max_drop is judged: point, "
                                   "significant (the drop is beyond max_drop and beyond noise) or "
                                   "non_inferiority (the interval shows no larger drop)")
    bar_test: str = setting("point", help="what bars compare with: point (the value) or interval "
                            "(the conservative end of its interval at `confidence`); lower_bound is "
                            "the old name of interval")
    min_group_identities: int = setting(10, help="a gated group with fewer identities fails closed")
    ungated_groups: List[str] = setting(help="groups reported but exempt from every rule",
                                        factory=list)
    target_fmr: float = setting(1e-3, help="FMR over all impostor pairs that sets the global 1:1 "
                                "threshold")
    max_fnmr: Union[None, float, Dict[str, float]] = setting(
        None, help="FNMR bar at the threshold: one number, or {scope: bar}; null: off")
    max_fmr_ratio: Optional[float] = setting(None, help="bar on the FMR differential (worst group "
                                             "FMR / target_fmr); null: off")
    max_fnmr_ratio: Optional[float] = setting(None, help="bar on the skewed error ratio (worst / "
                                              "best group FNMR); null: off")
    bootstrap_resamples: int = setting(1000, help="identity-bootstrap resamples of every interval")
    bootstrap_seed: int = setting(0, help="seed of the bootstrap draws")
    confidence: float = setting(0.95, help="level of every interval")
    report_examples: int = setting(6, help="error gallery of the report: this many highest-scoring "
                                   "impostor and lowest-scoring genuine pairs overall and per "
                                   "group, as the crops the model saw; 0 copies no image into the "
                                   "report (data that must not leave its store)")

    @classmethod
    def check_keys(cls, values: Mapping[str, Any], where: str,
                   elsewhere: Optional[Mapping[str, str]] = None) -> None:
        for name, reason in _REMOVED.items():
            if name in values:
                raise ValueError(f"{where}: gate setting {name} was removed: {reason}")
        refuse_unknown(values, cls.field_types(), where, elsewhere)

    def __post_init__(self):
        self.ks = sorted({int(k) for k in self.ks} | {1})
        self.bar_test = _RENAMED_BAR_TESTS.get(self.bar_test, self.bar_test)
        self._check_fractions()
        for name, value, allowed in [("gallery", self.gallery, GALLERIES),
                                     ("regression_test", self.regression_test, REGRESSION_TESTS),
                                     ("bar_test", self.bar_test, BAR_TESTS)]:
            if value not in allowed:
                raise ValueError(f"gate setting {name} must be one of {list(allowed)}, got {value!r}")
        if int(self.min_group_identities) != self.min_group_identities or self.min_group_identities < 1:
            raise ValueError(f"gate setting min_group_identities must be an integer >= 1, "
                             f"got {self.min_group_identities!r}")
        self.ungated_groups = sorted(str(g) for g in self.ungated_groups)
        if OVERALL in self.ungated_groups:
            raise ValueError(f"gate setting ungated_groups may not name {OVERALL!r}: it is always gated")
        if not 0.0 < float(self.target_fmr) < 1.0:
            raise ValueError(f"gate setting target_fmr must be in (0, 1), got {self.target_fmr!r}")
        for name in ("max_fmr_ratio", "max_fnmr_ratio"):
            value = getattr(self, name)
            if value is not None and not float(value) >= 1.0:
                raise ValueError(f"gate setting {name} must be >= 1 (a max/min ratio), got {value!r}")
        if int(self.bootstrap_resamples) < 100:
            raise ValueError(f"gate setting bootstrap_resamples must be >= 100, "
                             f"got {self.bootstrap_resamples!r}")
        if self.report_examples < 0:
            raise ValueError(f"gate setting report_examples must be an integer >= 0, got "
                             f"{self.report_examples!r}")
        if not 0.5 <= float(self.confidence) < 1.0:
            raise ValueError(f"gate setting confidence must be in [0.5, 1), got {self.confidence!r}")

    def _check_fractions(self) -> None:
        bounded = [("min_recall", self.min_recall), ("max_drop", self.max_drop),
                   *((f"group_min_recall[{g!r}]", v) for g, v in self.group_min_recall.items())]
        if self.min_recall_overall is not None:
            bounded.append(("min_recall_overall", self.min_recall_overall))
        if isinstance(self.max_fnmr, dict):
            bounded += [(f"max_fnmr[{g!r}]", v) for g, v in self.max_fnmr.items()]
        elif self.max_fnmr is not None:
            bounded.append(("max_fnmr", self.max_fnmr))
        for name, value in bounded:
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"gate setting {name} must be a number in [0, 1], got {value!r}")

    def bar(self, scope: str) -> float:
        if scope == OVERALL:
            return self.min_recall if self.min_recall_overall is None else self.min_recall_overall
        return float(self.group_min_recall.get(scope, self.min_recall))

    def gated(self, scope: str) -> bool:
        return scope == OVERALL or scope not in self.ungated_groups

    def fnmr_bar(self, scope: str) -> Optional[float]:
        if isinstance(self.max_fnmr, dict):
            value = self.max_fnmr.get(scope)
            return None if value is None else float(value)
        return None if self.max_fnmr is None else float(self.max_fnmr)

    @property
    def suffix(self) -> str:
        """Key suffix of the gated recall figure: "" (whole gallery) or "_within"."""
        return "_within" if self.gallery == "within" else ""
