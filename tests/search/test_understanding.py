"""Query understanding over an in-memory vocabulary: no database, no model."""

from __future__ import annotations

from search.understanding import Term, Vocabulary, phrase_key, understand, value_keys, words

COLOUR = "attribute:colour_group"
TYPE = "attribute:product_type_name"


def vocabulary() -> Vocabulary:
    vocab = Vocabulary()
    for field, value, count in (
        (COLOUR, "Black", 900), (COLOUR, "Light Blue", 80), (COLOUR, "Blue", 300),
        (COLOUR, "Dark Blue", 200), ("attribute:perceived_colour", "Black", 950),
        (TYPE, "Dress", 500), (TYPE, "T-shirt", 400), (TYPE, "Trousers", 700),
        (TYPE, "Boots", 60), (TYPE, "Leggings/Tights", 50), (TYPE, "Sweater", 300),
        ("attribute:graphical_appearance", "Stripe", 90), ("brand", "Acme", 10),
    ):  # fmt: skip
        for key in value_keys(value):
            vocab.add(key, Term(field=field, value=value), count)
    vocab.synonyms = {
        phrase_key("jumper"): ["sweater"],
        phrase_key("striped"): ["stripe"],
        phrase_key("navy"): ["dark blue", "navy blue"],
    }
    return vocab


def labels(query: str, **kwargs: object) -> list[str]:
    return understand(query, vocabulary=vocabulary(), **kwargs).labels  # type: ignore[arg-type]


def test_words_fold_case_accents_hyphens_and_plurals() -> None:
    assert words("Crème T-Shirts, DRESSES & boots") == ["creme", "tshirt", "dress", "boot"]
    assert phrase_key("t shirt") == phrase_key("T-shirt") == phrase_key("tshirts") == "tshirt"


def test_colour_and_type_are_read_as_the_catalogs_values() -> None:
    understood = understand("black ankle boots", vocabulary=vocabulary())

    assert understood.labels == ["Black", "Boots"]
    black = understood.concepts[0]
    # A colour stored under two attributes is one concept either satisfies.
    assert {term.field for term in black.terms} == {COLOUR, "attribute:perceived_colour"}
    assert understood.free_words == ("ankle",)


def test_longer_phrases_win_over_their_words() -> None:
    assert labels("light blue tshirt") == ["Light Blue", "T-shirt"]
    assert labels("striped t shirt") == ["Stripe", "T-shirt"]


def test_synonyms_reach_the_catalogs_words_and_say_so() -> None:
    understood = understand("navy jumper", vocabulary=vocabulary())

    assert understood.labels == ["Dark Blue", "Sweater"]
    assert [c.via for c in understood.concepts] == ["synonym", "synonym"]
    assert "sweater" in understood.text_words  # full text searches the catalog's word too


def test_parts_of_a_listed_value_find_it() -> None:
    assert labels("black leggings") == ["Black", "Leggings/Tights"]


def test_a_typo_correction_found_by_trigrams_becomes_a_concept() -> None:
    understood = understand(
        "trowsers", vocabulary=vocabulary(), corrections={"trowser": phrase_key("trousers")}
    )

    assert understood.labels == ["Trousers"] and understood.concepts[0].via == "typo"


def test_removed_terms_stay_plain_words() -> None:
    understood = understand("black dress", vocabulary=vocabulary(), removed=["Black"])

    assert understood.labels == ["Dress"]
    assert "black" in understood.free_words and "black" in understood.text_words


def test_unknown_words_and_stop_words_are_no_concepts() -> None:
    understood = understand("a quantum flux for the sofa", vocabulary=vocabulary())

    assert understood.concepts == ()
    assert understood.text_words == ("a", "quantum", "flux", "for", "the", "sofa")
