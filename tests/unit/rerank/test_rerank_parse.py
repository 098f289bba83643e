import random
import string

import pytest

from lab.rerank.listwise import parse_permutation


@pytest.mark.parametrize("text, num, expected", [
    ("[B] > [A] > [C]", 3, [1, 0, 2]),
    ("[B]>[A]>[C]", 3, [1, 0, 2]),                  # no spaces
    ("[ B ] > [ A ]", 2, [1, 0]),                    # spaces inside brackets
    ("[b] > [a] > [c]", 3, [1, 0, 2]),               # lower case
    ("[B] > [B] > [A] > [B]", 3, [1, 0, 2]),         # duplicates dropped, first kept
    ("[C]", 3, [2, 0, 1]),                           # missing appended in input order
    ("[C] > [A]", 4, [2, 0, 1, 3]),
    ("[Z] > [B] > [D] > [A]", 3, [1, 0, 2]),         # out of range (D, Z for num=3) ignored
    ("[2] > [1]", 2, [0, 1]),                        # numeric identifiers are not ours
    ("[AB] > [B]", 2, [1, 0]),                       # multi-letter tokens ignored
    ("[B] > [A] > [C", 4, [1, 0, 2, 3]),             # cut by the token limit
    ("B] > [A] > [C]", 3, [1, 0, 2]),                # "[" was the end of the prompt
    ("Ranking: [B] > [A]. Done.", 2, [1, 0]),
    ("B > A > C", 3, [1, 0, 2]),                     # no brackets at all
    ("B>C", 3, [1, 2, 0]),
    ("I cannot rank these passages.", 9, list(range(9))),   # garbage: "I" must not count as [I]
    ("", 4, [0, 1, 2, 3]),
    ("[T] > [A]", 20, [19, 0] + list(range(1, 19))),
])
def test_parse_permutation(text, num, expected):
    assert parse_permutation(text, num) == expected


def test_too_many_passages_for_the_alphabet():
    with pytest.raises(ValueError):
        parse_permutation("[A]", 27)


def test_always_a_permutation_on_random_text():
    rng = random.Random(0)
    alphabet = string.ascii_letters + "[]> ,.0123456789"
    for _ in range(500):
        num = rng.randint(1, 20)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert sorted(parse_permutation(text, num)) == list(range(num))
