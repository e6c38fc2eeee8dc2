"""`physiofm validate`: the checks (:mod:`.checks`) and what they found (:mod:`.report`)."""

from physiofm.store.validate.checks import validate
from physiofm.store.validate.report import Problem, Report, print_report

__all__ = ["Problem", "Report", "print_report", "validate"]
