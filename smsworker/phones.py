"""Phone numbers typed by people, normalised to E.164 with the phonenumbers library."""

import phonenumbers

# The region whose national format a number without a country code is read in.
DEFAULT_REGION = "US"


def normalize(text: str, region: str = DEFAULT_REGION) -> str | None:
    """Return `text` as an E.164 number (+12135550101), or None when it is not a valid one.

    `(213) 555-0101`, `213.555.0101` and `+1 213 555 0101` all give
    +12135550101 in the region US.
    """
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_region(code: str) -> bool:
    """Return whether `code` is a region the phonenumbers library supports, such as US or GB."""
    return code in phonenumbers.SUPPORTED_REGIONS
