"""Tests of command parsing, list formatting and reply splitting (no database)."""

import random
from collections.abc import Callable

import pytest

from smsworker.commands import (
    MAX_LIST_REPLY_LENGTH,
    MAX_REPLY_LENGTH,
    PREVIEW_LENGTH,
    Command,
    ParsedMessage,
    format_list,
    parse,
    preview,
    reply_length,
    split_reply,
)

EMOJI = "\N{GRINNING FACE}"  # Outside the Basic Multilingual Plane, so two UTF-16 units.


def non_space_characters(text: str) -> list[str]:
    return [char for char in text if not char.isspace()]


def assert_valid_parts(parts: list[str], text: str, max_length: int) -> None:
    """Check the rules every split must keep, whatever the text."""
    assert parts, "split_reply returned no parts"
    for part in parts:
        assert reply_length(part) <= max_length, f"part of {reply_length(part)} units"
        # Fails on a lone surrogate, which a cut inside a character would leave.
        part.encode("utf-8")
    joined = "\n".join(parts)
    assert non_space_characters(joined) == non_space_characters(text)


# Parsing: adding items.


@pytest.mark.parametrize(
    ("body", "expected_text"),
    [
        ("buy milk", "buy milk"),
        ("  buy milk \n", "buy milk"),
        ("delete milk", "delete milk"),
        ("deli meat", "deli meat"),
        ("del3", "del3"),
        ("stop at the bakery", "stop at the bakery"),
        ("help mom", "help mom"),
        ("yes please", "yes please"),
        ("ls -la", "ls -la"),
        ("11", "11"),
        ("01", "01"),
        ("buy\n2 eggs", "buy\n2 eggs"),
        (EMOJI + " party", EMOJI + " party"),
    ],
    ids=[
        "plain",
        "surrounding-whitespace",
        "delete-word",
        "deli-prefix",
        "del-without-space",
        "stop-in-sentence",
        "help-in-sentence",
        "yes-in-sentence",
        "ls-with-argument",
        "eleven",
        "zero-one",
        "inner-newline",
        "emoji",
    ],
)
def test_parse_text_is_added(body: str, expected_text: str) -> None:
    parsed = parse(body)

    assert parsed.command is Command.ADD
    assert parsed.text == expected_text


# Parsing: empty bodies.


@pytest.mark.parametrize(
    "body",
    [None, "", " ", "  \n ", "\t\r\n"],
    ids=["none", "empty", "space", "blank-lines", "tab-crlf"],
)
def test_parse_blank_body_is_empty(body: str | None) -> None:
    assert parse(body) == ParsedMessage(Command.EMPTY)


# Parsing: listing.


@pytest.mark.parametrize(
    "body",
    ["1", "ls", "LS", "Ls", " 1 ", "\tls\n"],
    ids=["one", "ls", "upper", "mixed-case", "spaced-one", "tab-newline"],
)
def test_parse_list_command(body: str) -> None:
    assert parse(body) == ParsedMessage(Command.LIST)


# Parsing: Twilio's reserved keywords, spelled out here rather than read from
# commands.py, so a keyword dropped there fails these tests.
KEYWORD_CASES = [
    *(
        (word, Command.OPT_OUT)
        for word in ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
    ),
    *((word, Command.OPT_IN) for word in ["START", "UNSTOP", "YES"]),
    *((word, Command.HELP) for word in ["HELP", "INFO"]),
]


@pytest.mark.parametrize(("word", "command"), KEYWORD_CASES, ids=[w for w, _ in KEYWORD_CASES])
@pytest.mark.parametrize(
    "spelling",
    [str.upper, str.lower, str.capitalize, lambda word: f"  {word.lower()} \n"],
    ids=["upper", "lower", "capitalized", "padded"],
)
def test_parse_reserved_keyword(
    word: str, command: Command, spelling: Callable[[str], str]
) -> None:
    parsed = parse(spelling(word))

    assert parsed.command is command
    assert parsed.text == ""


@pytest.mark.parametrize(
    "body",
    ["stop stop", "STOP.", "please stop", "info?", "start over"],
    ids=["repeated", "with-period", "in-phrase", "with-question-mark", "start-over"],
)
def test_parse_keyword_with_more_is_added(body: str) -> None:
    assert parse(body) == ParsedMessage(Command.ADD, text=body)


# Parsing: deleting.


@pytest.mark.parametrize(
    ("body", "position"),
    [
        ("del 3", 3),
        ("DEL 3", 3),
        ("Del 3", 3),
        ("  del   03 ", 3),
        ("del\t7", 7),
        ("del\n12", 12),
        ("del 1", 1),
        ("del 250", 250),
    ],
    ids=["lower", "upper", "capitalized", "padded-zero", "tab", "newline", "first", "large"],
)
def test_parse_delete_position(body: str, position: int) -> None:
    assert parse(body) == ParsedMessage(Command.DELETE, position=position)


@pytest.mark.parametrize(
    "body",
    [
        "del abc",
        "del 0",
        "del 00",
        "del",
        "DEL  ",
        "del -1",
        "del +1",
        "del 1.5",
        "del 1,5",
        "del 1 2",
        "del \N{FULLWIDTH DIGIT TWO}",
        "del \N{SUPERSCRIPT TWO}",
        "del \N{ARABIC-INDIC DIGIT THREE}",
        "del " + EMOJI,
    ],
    ids=[
        "letters",
        "zero",
        "double-zero",
        "alone",
        "alone-upper-padded",
        "negative",
        "plus-sign",
        "decimal",
        "decimal-comma",
        "two-numbers",
        "fullwidth-digit",
        "superscript-digit",
        "arabic-indic-digit",
        "emoji",
    ],
)
def test_parse_delete_invalid_has_error(body: str) -> None:
    parsed = parse(body)

    assert parsed.command is Command.DELETE
    assert parsed.position is None
    assert isinstance(parsed.error, str)
    assert parsed.error.strip()


def test_parse_delete_error_names_argument() -> None:
    parsed = parse("del abc")

    assert parsed.error is not None
    assert "abc" in parsed.error


def test_parse_delete_error_previews_long_argument() -> None:
    argument = "x" * 1000

    parsed = parse("del " + argument)

    assert parsed.error is not None
    assert argument not in parsed.error
    assert reply_length(parsed.error) <= MAX_REPLY_LENGTH


def test_parse_valid_delete_has_no_error() -> None:
    assert parse("del 2").error is None


@pytest.mark.parametrize(
    "digits",
    ["9" * 5000, "0" * 4400 + "3" * 10, "99999999999999999999"],
    ids=["5000-digits", "leading-zeros", "beyond-bigint"],
)
def test_parse_delete_huge_number_has_error(digits: str) -> None:
    parsed = parse("del " + digits)

    assert parsed.command is Command.DELETE
    assert parsed.position is None
    assert parsed.error is not None
    assert parsed.error.startswith("There is no item")


def test_parse_delete_leading_zeros_small_number() -> None:
    assert parse("del " + "0" * 4400 + "3").position == 3


# Previews and list formatting.


def test_preview_keeps_short_text() -> None:
    text = "a" * PREVIEW_LENGTH

    assert preview(text) == text


def test_preview_shortens_long_text() -> None:
    text = "b" * (PREVIEW_LENGTH + 1)

    shortened = preview(text)

    assert len(shortened) == PREVIEW_LENGTH
    assert shortened.endswith("…")
    assert text.startswith(shortened[:-1])


def test_format_list_numbers_from_one() -> None:
    assert format_list(["milk", "eggs", "bread"]) == "1. milk\n2. eggs\n3. bread"


def test_format_list_item_over_lines_one_line() -> None:
    assert format_list(["milk\r\n  and\n\nbread", "eggs"]) == "1. milk and bread\n2. eggs"


def test_split_reply_keeps_number_with_text() -> None:
    line = "4. " + "x" * 2000

    parts = split_reply(line)

    assert parts[0].startswith("4. xxx")
    assert "".join(parts) == line


def test_format_list_single_item() -> None:
    assert format_list(["milk"]) == "1. milk"


def test_format_list_empty_says_empty() -> None:
    reply = format_list([])

    assert "empty" in reply.lower()
    assert not reply.startswith("1.")


# Reply lengths.


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("", 0),
        ("abc", 3),
        ("é", 1),
        ("中文", 2),
        (EMOJI, 2),
        ("\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}", 4),
    ],
    ids=["empty", "ascii", "latin", "cjk", "emoji", "emoji-with-skin-tone"],
)
def test_reply_length_counts_utf16_units(text: str, length: int) -> None:
    assert reply_length(text) == length


# Reply splitting.


def test_split_reply_short_text_unchanged() -> None:
    text = format_list(["milk", "eggs"])

    assert split_reply(text) == [text]


def test_split_reply_empty_text() -> None:
    parts = split_reply("")

    assert len(parts) <= 1
    assert "".join(parts) == ""


def test_split_reply_sixty_items_start_at_item() -> None:
    items = [f"item {number:02d} " + "x" * 32 for number in range(1, 61)]
    text = format_list(items)
    item_lines = text.split("\n")

    parts = split_reply(text)

    assert len(parts) >= 2
    assert_valid_parts(parts, text, MAX_REPLY_LENGTH)
    assert "\n".join(parts) == text
    for part in parts:
        assert part.split("\n")[0] in item_lines


def test_split_reply_sixty_items_keep_lines_whole() -> None:
    lines = format_list([f"buy thing number {number} at the market" for number in range(60)])

    parts = split_reply(lines)

    part_lines = [line for part in parts for line in part.split("\n")]
    assert part_lines == lines.split("\n")


def test_split_reply_long_line_cut_at_spaces() -> None:
    words = [f"word{number}" for number in range(1300)]
    line = " ".join(words)
    assert len(line) > 10_000

    parts = split_reply(line)

    assert len(parts) >= 7
    assert_valid_parts(parts, line, MAX_REPLY_LENGTH)
    assert " ".join(parts).split() == words


def test_split_reply_long_line_without_spaces() -> None:
    line = "".join(chr(ord("a") + number % 26) for number in range(10_000))

    parts = split_reply(line)

    assert len(parts) == 7
    assert_valid_parts(parts, line, MAX_REPLY_LENGTH)
    assert "".join(parts) == line


def test_split_reply_emoji_line_not_cut_inside() -> None:
    line = EMOJI * 1000
    assert reply_length(line) == 2000

    parts = split_reply(line)

    assert len(parts) == 2
    assert_valid_parts(parts, line, MAX_REPLY_LENGTH)
    assert "".join(parts) == line


def test_split_reply_emoji_at_limit_moves_whole() -> None:
    # 1599 ASCII characters and an emoji make 1601 UTF-16 units, so the emoji starts part 2.
    line = "a" * 1599 + EMOJI

    parts = split_reply(line)

    assert parts == ["a" * 1599, EMOJI]


@pytest.mark.parametrize(
    ("text", "expected_parts"),
    [
        ("a" * 1600, 1),
        ("a" * 1601, 2),
        (EMOJI * 800, 1),
        (EMOJI * 800 + "a", 2),
        ("a" * 800 + "\n" + "b" * 799, 1),
        ("a" * 800 + "\n" + "b" * 800, 2),
        ("a" * 1600 + "\n" + "b" * 1600, 2),
    ],
    ids=[
        "line-at-limit",
        "line-one-over",
        "emoji-at-limit",
        "emoji-one-over",
        "two-lines-at-limit",
        "two-lines-one-over",
        "two-full-lines",
    ],
)
def test_split_reply_exact_limit(text: str, expected_parts: int) -> None:
    parts = split_reply(text)

    assert len(parts) == expected_parts
    assert_valid_parts(parts, text, MAX_REPLY_LENGTH)


def test_split_reply_full_lines_stay_whole() -> None:
    text = "a" * 1600 + "\n" + "b" * 1600

    assert split_reply(text) == ["a" * 1600, "b" * 1600]


def test_split_reply_custom_max_length() -> None:
    text = "1. milk\n2. eggs\n3. bread"

    assert split_reply(text, max_length=15) == ["1. milk\n2. eggs", "3. bread"]


@pytest.mark.timeout(2)
def test_split_reply_limit_below_character_raises() -> None:
    # No part can hold a character wider than max_length, so the limit is invalid.
    with pytest.raises(ValueError):
        split_reply(EMOJI, max_length=1)


# Reply splitting: a seeded property check over generated texts.

ALPHABET = [
    *"abcdefghij",
    *"0123456789",
    " ",
    " ",
    " ",
    ".",
    "é",
    "e\N{COMBINING ACUTE ACCENT}",
    "中",
    "\N{IDEOGRAPHIC SPACE}",
    EMOJI,
    "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}",
    "\N{REGIONAL INDICATOR SYMBOL LETTER F}\N{REGIONAL INDICATOR SYMBOL LETTER R}",
]
MAX_LENGTHS = [2, 3, 7, 40, 160, MAX_REPLY_LENGTH]


def random_line(rng: random.Random, max_length: int, allow_blank: bool) -> str:
    size = rng.randint(0 if allow_blank else 1, max_length * 2 + 2)
    line = "".join(rng.choice(ALPHABET) for _ in range(size))
    if not allow_blank and not line.strip():
        line += "z"
    return line


def random_text(rng: random.Random, max_length: int, allow_blank: bool) -> str:
    line_count = rng.randint(1, 8)
    return "\n".join(random_line(rng, max_length, allow_blank) for _ in range(line_count))


def test_split_reply_random_texts_keep_rules() -> None:
    rng = random.Random(1234)

    for _ in range(400):
        max_length = rng.choice(MAX_LENGTHS)
        text = random_text(rng, max_length, allow_blank=True)

        parts = split_reply(text, max_length=max_length)

        assert_valid_parts(parts, text, max_length)
        part_lines = {line for part in parts for line in part.split("\n")}
        for line in text.split("\n"):
            if line and reply_length(line) <= max_length:
                assert line in part_lines, f"line {line!r} was cut though it fits"


def test_split_reply_random_fitting_lines_rejoin() -> None:
    rng = random.Random(1234)

    for _ in range(400):
        max_length = rng.choice(MAX_LENGTHS)
        lines = []
        for _ in range(rng.randint(1, 40)):
            line = random_line(rng, max_length, allow_blank=False)
            while reply_length(line) > max_length:
                line = line[: len(line) // 2] or "z"
            lines.append(line)
        text = "\n".join(lines)

        parts = split_reply(text, max_length=max_length)

        assert_valid_parts(parts, text, max_length)
        assert "\n".join(parts) == text


def test_format_list_long_list_capped() -> None:
    items = [f"item number {index} with a few more words" for index in range(1000)]

    text = format_list(items)

    lines = text.split("\n")
    assert reply_length(text) <= MAX_LIST_REPLY_LENGTH + 100
    assert len(split_reply(text)) <= 6
    assert lines[0] == "1. item number 0 with a few more words"
    assert lines[-1] == f"…and {1001 - len(lines)} more. Send del N to remove done items."


def test_format_list_total_beyond_items() -> None:
    text = format_list(["milk"], total=3)

    assert text == "1. milk\n…and 2 more. Send del N to remove done items."
