import pytest

from lab.rerank.prompts import load_prompt

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"


def test_prompt_metadata():
    p = load_prompt("first_alpha_v1")
    assert p == load_prompt() and p is load_prompt("first_alpha_v1")     # the default; cached
    assert (p.name, p.version) == ("first_alpha_v1", 1)
    assert p.system == SYSTEM
    assert "".join(p.identifiers[:20]) == "ABCDEFGHIJKLMNOPQRST"
    assert p.max_passages == 26 and p.response_prefix == "["


def test_user_message_matches_official_layout():
    p = load_prompt()
    got = p.user_message("what is rust", ["Rust is a  systems\nlanguage.", "Iron oxide."])
    expected = (
        "I will provide you with 2 passages, each indicated by a alphabetical identifier []. "
        "Rank the passages based on their relevance to the search query: what is rust.\n\n"
        "[A] Rust is a systems language.\n"
        "[B] Iron oxide.\n"
        "Search Query: what is rust.\n"
        "Rank the 2 passages above based on their relevance to the search query. All the passages should be "
        "included and listed using identifiers, in descending order of relevance. The output format should be "
        "[] > [], e.g., [B] > [A], Only respond with the ranking results, do not say any word or explain.")
    assert got == expected


def test_passage_truncation_and_sanitising():
    p = load_prompt()
    assert p.clean_passage("one two three four", 2) == "one two"
    assert p.clean_passage("  one\t two  ", None) == "one two"
    assert p.clean_passage("see [B] and [ab] but not [12]", None) == "see (B) and (ab) but not [12]"
    msg = p.user_message("q", [" ".join(f"w{i}" for i in range(500))], max_words=300)
    assert "w299" in msg and "w300" not in msg


def test_templates_do_not_interpret_braces_in_data():
    p = load_prompt()
    msg = p.user_message("a {query} b", ["x {num} {} y"])
    assert "query: a {query} b." in msg and "[A] x {num} {} y\n" in msg


def test_messages_with_and_without_system_role():
    p = load_prompt()
    with_sys = p.messages("q", ["a"])
    assert [m["role"] for m in with_sys] == ["system", "user"] and with_sys[0]["content"] == SYSTEM
    no_sys = p.messages("q", ["a"], system_supported=False)
    assert len(no_sys) == 1 and no_sys[0]["content"] == SYSTEM + "\n " + with_sys[1]["content"]


def test_ranking_text_and_limits():
    p = load_prompt()
    assert p.ranking_text([1, 0, 2]) == "[B] > [A] > [C]"
    with pytest.raises(ValueError):
        p.user_message("q", ["x"] * 27)
    with pytest.raises(ValueError):
        p.user_message("q", [])
    with pytest.raises(FileNotFoundError):
        load_prompt("no_such_prompt")
