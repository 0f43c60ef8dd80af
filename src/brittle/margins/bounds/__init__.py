"""Lower bounds and exact values of the input margin.

* `certified_lower_bounds`: sound per-sample lower bounds by IBP or CROWN bound propagation with a
  bisection on the radius (L∞ and L2, ReLU networks of Linear / Conv2d / ReLU / Flatten).
* `exact_margins`: exact L∞ margins of small ReLU networks by mixed-integer programming (HiGHS).
"""

from .certify import certified_lower_bounds
from .exact import ExactMargins, exact_margins

__all__ = ["certified_lower_bounds", "exact_margins", "ExactMargins"]
