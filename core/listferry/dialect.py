"""Dialects: how one CRM writes its list file, and how its headers map to our fields."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

#: The canonical fields a list file can fill. Every other column is kept in ``fields``.
CANONICAL_FIELDS = ("email", "first_name", "last_name", "segment_code", "opt_out")

#: Header spellings of the canonical fields, English first, then the German, French,
#: Dutch and Spanish words European CRMs write in their exports.
DEFAULT_ALIASES: Mapping[str, Sequence[str]] = {
    "email": (
        "email",
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "e-mail-adresse",
        "adresse e-mail",
        "courriel",
        "correo electrónico",
        "correo electronico",
    ),
    "first_name": (
        "first name",
        "firstname",
        "given name",
        "forename",
        "vorname",
        "prénom",
        "prenom",
        "voornaam",
        "nombre",
    ),
    "last_name": (
        "last name",
        "lastname",
        "surname",
        "family name",
        "nachname",
        "familienname",
        "nom",
        "nom de famille",
        "achternaam",
        "apellidos",
    ),
    "segment_code": ("segment", "segment code", "segmentcode"),
}

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "x", "t", "on", "opted out", "unsubscribed"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "f", "off", "", "subscribed", "opted in"})

_FOLD = re.compile(r"[\s_\-.]+")

#: A folded header that looks like an opt-out flag: a word for "opted out", "do not mail",
#: "bounced" or "blocked" (English, then German, French, Dutch, Spanish), maybe after
#: ``is``/``has`` and ``email``/``newsletter``, maybe followed by ``of email``, ``flag`` or
#: ``status``. "Unsubscribe Date" or "Opt-Out Reason" are no flags and do not match.
_OPT_OUT_FLAG = re.compile(
    r"(?:is|has)?(?:e?mail|newsletter|marketing)?"
    r"(?:unsubscribed?|optedout|optsout|optout"
    r"|do(?:not|nt)(?:allow)?(?:bulk)?(?:e?mails?|mailing|newsletters?|contact)"
    r"|no(?:e?mails?|mailing|newsletters?|contact)"
    r"|(?:hard)?bounced?|blocked|blacklisted|blocklisted"
    r"|abgemeldet|abbestellt|werbesperre|keine?(?:e?mails?|newsletter|werbung)"
    r"|d[ée]sinscrite?|d[ée]sabonn[ée]e?|afgemeld|uitgeschreven|dadodebaja|desuscrito)"
    r"(?:(?:of|from)(?:all)?(?:e?mails?|newsletters?|marketing))?(?:flag|status)?"
)


def fold_header(name: str) -> str:
    """Fold a header for matching: case, spaces, hyphens, underscores and dots do not count."""
    return _FOLD.sub("", name.strip().strip("\ufeff")).casefold()


def looks_like_opt_out(name: str) -> bool:
    """Whether header ``name`` looks like an opt-out flag (``Do Not Email``, ``opt_out``,
    ``HasOptedOutOfEmail``, ``Newsletter abgemeldet``...), whatever a dialect makes of it."""
    folded = fold_header(unicodedata.normalize("NFC", name))
    return _OPT_OUT_FLAG.fullmatch(folded) is not None


@dataclass(frozen=True)
class Dialect:
    """How one CRM writes its list file.

    ``delimiter`` and ``encoding`` set to ``None`` mean: find out from the file (a
    delimiter among ``,`` ``;`` tab ``|``; UTF-8 with or without BOM, else cp1252).
    ``aliases`` maps each canonical field to the header spellings that mean it.
    ``opt_out_true`` / ``opt_out_false`` are the words of the opt-out column, compared
    case-insensitively; any other word makes the row invalid. ``template`` is the
    return-file template a tenant of this dialect gets when it names none
    (``export_template``), so a CRM pack's tenants need only ``dialect = "..."``.
    ``also_opt_out`` names more columns that opt a subscriber out, each with the words
    that mean so in it (``{"Email delivery disabled": {"yes", "true"}}``): a row is opted
    out when its opt-out column says so or any of these does; any other value in them
    changes nothing. They stay in ``fields`` as well.
    """

    name: str
    description: str = ""
    delimiter: str | None = None
    quotechar: str = '"'
    encoding: str | None = None
    aliases: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    opt_out_true: frozenset[str] = TRUE_WORDS
    opt_out_false: frozenset[str] = FALSE_WORDS
    required: tuple[str, ...] = ("email",)
    reader: str = "csv"
    template: str | None = None
    also_opt_out: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.aliases) - set(CANONICAL_FIELDS)
        if unknown:
            raise ValueError(
                f"dialect {self.name!r} maps unknown field(s) {sorted(unknown)}; "
                f"canonical fields are {', '.join(CANONICAL_FIELDS)}"
            )
        self._lookup()
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"dialect {self.name!r}: delimiter must be one character")

    def _lookup(self) -> dict[str, str]:
        """``{folded spelling: canonical field}``; a spelling two fields claim is an error."""
        lookup: dict[str, str] = {}
        for canonical, spellings in self.aliases.items():
            for spelling in (canonical, *spellings):
                other = lookup.setdefault(fold_header(spelling), canonical)
                if other != canonical:
                    raise ValueError(
                        f"dialect {self.name!r}: header {spelling!r} cannot mean both "
                        f"{other} and {canonical}"
                    )
        return lookup

    def map_header(self, header: Sequence[str]) -> dict[int, str]:
        """Return ``{column index: canonical field}`` for the columns this dialect knows."""
        lookup = self._lookup()
        folded = [fold_header(name) for name in header]
        return {index: lookup[name] for index, name in enumerate(folded) if name in lookup}

    def explain_header(self, header: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
        """For each column: ``(header, canonical field or None, the spelling it matched)``.

        What ``listferry check`` shows an integrator: which of the dialect's spellings a
        header matched once folded (case, spaces, ``-``, ``_`` and ``.`` do not count).
        """
        spelled: dict[str, list[tuple[str, str]]] = {}
        for canonical, spellings in self.aliases.items():
            for spelling in (canonical, *spellings):
                spelled.setdefault(fold_header(spelling), []).append((canonical, spelling))
        explained = []
        for name in header:
            matches = spelled.get(fold_header(name), [(None, None)])
            exact = [m for m in matches if m[1] == name.strip().strip("\ufeff")]
            explained.append((name, *(exact or matches)[0]))
        return explained

    def also_opt_out_columns(self, header: Sequence[str]) -> list[tuple[int, frozenset[str]]]:
        """``[(column index, folded words)]`` of the ``also_opt_out`` columns present."""
        wanted = {
            fold_header(spelling): frozenset(w.strip().casefold() for w in words)
            for spelling, words in self.also_opt_out.items()
        }
        return [
            (index, wanted[fold_header(name)])
            for index, name in enumerate(header)
            if fold_header(name) in wanted
        ]

    def opt_out_warnings(self, header: Sequence[str], for_customer: bool = False) -> list[str]:
        """A warning for each column that looks like an opt-out flag but that this dialect
        neither maps to a field nor reads in ``also_opt_out``: what it says changes nothing.

        Readers give these as :attr:`listferry.records.FileInfo.warnings`, so ``check`` and
        the result report show them; the file is not voided for them. They speak to the
        operator (which setting honours the column); ``for_customer``: the same warnings
        in the words of the customer's result report (whom to ask).
        """
        read = set(self._lookup()) | {fold_header(name) for name in self.also_opt_out}
        unread = [n for n in header if fold_header(n) not in read and looks_like_opt_out(n)]
        if for_customer:
            return [
                f"column {name!r} looks like an opt-out flag, but it is not read as one: its "
                "rows stay subscribed whatever it says. If it should unsubscribe people, ask "
                "your operator to read it as an opt-out column."
                for name in unread
            ]
        return [
            f"column {name!r} looks like an opt-out flag, but dialect {self.name!r} does not "
            "read it: its rows stay subscribed whatever it says (name it in the tenant's "
            "opt_out_columns to honour it)"
            for name in unread
        ]

    def with_opt_out_columns(self, columns: Sequence[str], words: Iterable[str]) -> Dialect:
        """This dialect, with ``columns`` opting a subscriber out when they say one of
        ``words`` (a tenant's ``opt_out_columns`` and ``opt_out_values``)."""
        if not columns:
            return self
        also = {**self.also_opt_out, **dict.fromkeys(columns, frozenset(words))}
        return replace(self, also_opt_out=also)

    def opt_out_value(self, word: str) -> bool | None:
        """Read one opt-out cell: True, False, or None when the word is not one we know."""
        folded = word.strip().casefold()
        if folded in self.opt_out_true:
            return True
        if folded in self.opt_out_false:
            return False
        return None
