"""Consensus partial orders: order axioms, K = 1, monotonicity in the number of models, Hasse diagrams."""

from __future__ import annotations

import xml.dom.minidom

import numpy as np
import pytest

from brittle.errors import BrittleError
from brittle.explain import consensus_order
from brittle.explain.hasse import hasse_svg


def random_attr(seed, K, G):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=G) * np.arange(1, G + 1)
    return base + rng.normal(scale=1.5, size=(K, G))


@pytest.mark.parametrize("seed", range(12))
def test_strict_partial_order_axioms(seed):
    o = consensus_order(random_attr(seed, 1 + seed % 5, 9))
    R = o.relation
    assert not R.diagonal().any()                         # irreflexive
    assert not (R & R.T).any()                            # antisymmetric
    closure = (R.astype(int) @ R.astype(int)) > 0
    assert not (closure & ~R).any()                       # transitive
    assert not R[o.ambiguous].any()                       # ambiguous players dominate nothing
    assert o.cardinality == R.sum()


def test_one_model_gives_the_total_order_up_to_ties():
    a = np.array([0.5, -2.0, 1.0, 1.0, 0.0, 3.0])
    o = consensus_order(a[None], list("abcdef"))
    mag = np.abs(a)
    assert not o.ambiguous.any()
    np.testing.assert_array_equal(o.relation, mag[:, None] > mag[None, :])
    assert o.support == 1.0
    # ties (c, d) are incomparable; every other pair is comparable
    comparable = o.relation | o.relation.T
    assert comparable.sum() == 6 * 5 - 2


@pytest.mark.parametrize("seed", range(8))
def test_adding_a_model_never_adds_a_relation(seed):
    A = random_attr(100 + seed, 6, 8)
    previous = consensus_order(A[:1])
    for k in range(2, 7):
        current = consensus_order(A[:k])
        assert not (current.relation & ~previous.relation).any()
        assert (current.ambiguous | ~previous.ambiguous).all()  # ambiguity only grows
        previous = current


def test_sign_disagreement_makes_a_feature_ambiguous():
    A = np.array([[3.0, 1.0, 0.1], [-3.0, 1.2, 0.2]])
    o = consensus_order(A, ["a", "b", "c"])
    assert o.ambiguous.tolist() == [True, False, False]
    assert o.relation.tolist() == [[False, False, False], [False, False, True], [False, False, False]]
    # mean order: |mean| = [0, 1.1, 0.15] → pairs b>a, b>c, c>a; consensus holds only b>c
    assert o.support == pytest.approx(1 / 3)


def test_hasse_diagram_is_the_transitive_reduction():
    a = np.array([[4.0, 3.0, 2.0, 1.0]])
    o = consensus_order(a, list("abcd"))
    assert o.hasse_edges() == [(0, 1), (1, 2), (2, 3)]
    assert o.levels().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("engine", ["python", "auto"])
def test_svg_is_well_formed_and_escapes_text(engine):
    A = random_attr(3, 3, 5)
    names = ["<script>alert(1)</script>", 'a"b', "c&d", "e'f", "g"]
    svg = hasse_svg(consensus_order(A, names), engine=engine)
    xml.dom.minidom.parseString(svg)
    assert "<script>" not in svg


def test_bad_inputs_are_refused():
    for bad in ([], [[np.nan, 1.0]], np.zeros((2, 2, 2)), [["a", "b"]]):
        with pytest.raises(BrittleError):
            consensus_order(bad)
    with pytest.raises(BrittleError):
        consensus_order([[1.0, 2.0]], ["a"])
    with pytest.raises(BrittleError):
        consensus_order([[1.0, 2.0]], ["a", "a"])
    with pytest.raises(BrittleError):
        consensus_order([[1.0, 2.0]], tol=-1)
    with pytest.raises(BrittleError):
        hasse_svg(consensus_order([[1.0, 2.0]]), engine="neato")
