"""What ``autotune pull MODEL`` means: Hugging Face references, quant tags and the friendly aliases.

Accepted forms (the first is also what Ollama accepts, so the same name works with ``--backend ollama``):

- ``hf.co/OWNER/REPO:QUANT`` (also ``huggingface.co/...``), the quant optional;
- ``OWNER/REPO`` with ``file=NAME.gguf`` or ``quant=Q4_K_M``;
- an alias from :data:`ALIASES` (small instruction-tuned models a user can chat with).

Pure functions only: nothing here touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidRequest

#: the quant picked when a repository has several and none was asked for (Ollama's choice too)
DEFAULT_QUANTS: tuple[str, ...] = ("Q4_K_M", "Q8_0")

_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HOST_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
#: a quant tag inside a file name: Q4_K_M, Q8_0, IQ4_XS, F16, BF16, UD-Q4_K_XL...
_QUANT_IN_NAME = re.compile(r"(?:^|[-._])((?:UD-)?(?:I?Q\d[\w]*?|[BF]F?16|F32))(?:\.gguf$|[-.])", re.IGNORECASE)


@dataclass(frozen=True)
class Alias:
    """A friendly name for one GGUF file of one repository."""

    repo: str
    file: str
    note: str


#: Small instruction-tuned GGUFs. Repo ids and file names as published on the Hub (not re-checked from
#: here: this machine cannot reach the Hub); sizes are the Hub's.
ALIASES: dict[str, Alias] = {
    "gemma3-270m-it": Alias(
        "ggml-org/gemma-3-270m-it-GGUF",
        "gemma-3-270m-it-Q8_0.gguf",
        "Gemma 3 270M instruction-tuned, Q8_0 (292 MB; ggml-org's conversion)",
    ),
    "qwen2.5-0.5b-instruct": Alias(
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        "Qwen 2.5 0.5B Instruct, Q4_K_M (~0.5 GB; Qwen's own GGUF)",
    ),
    "qwen3-0.6b": Alias(
        "Qwen/Qwen3-0.6B-GGUF",
        "Qwen3-0.6B-Q8_0.gguf",
        "Qwen 3 0.6B (instruct, with thinking), Q8_0 (~0.64 GB; Qwen's own GGUF)",
    ),
}

#: what to suggest to someone holding only the bundled base model
SUGGESTED_ALIAS = "gemma3-270m-it"


@dataclass(frozen=True)
class HubRef:
    """A request for one GGUF of a Hugging Face model repository (file or quant may still be open)."""

    repo: str
    file: str | None = None
    quant: str | None = None
    revision: str | None = None
    alias: str | None = None

    @property
    def ollama_name(self) -> str:
        """The same model as Ollama's ``/api/pull`` names it (``hf.co/OWNER/REPO:QUANT``)."""
        quant = self.quant or (quant_of(self.file) if self.file else None)
        return f"hf.co/{self.repo}" + (f":{quant}" if quant else "")


def is_hub_ref(model: str) -> bool:
    """Whether ``model`` names a Hugging Face repository or an alias (else: an Ollama library name)."""
    text = model.strip()
    if text.lower() in ALIASES:
        return True
    for prefix in _HOST_PREFIXES:
        if text.lower().startswith(prefix):
            return True
    return bool(_REPO.match(text.split(":", 1)[0]))


def parse_ref(model: str, *, file: str | None = None, quant: str | None = None, revision: str | None = None) -> HubRef:
    """Turn the command line into a :class:`HubRef`; raises :class:`InvalidRequest` with the accepted forms."""
    text = model.strip()
    if file is not None and quant is not None:
        raise InvalidRequest("give --file or --quant, not both")
    if file is not None and not file.lower().endswith(".gguf"):
        raise InvalidRequest(f"--file must name a .gguf file, got {file!r}")
    alias = ALIASES.get(text.lower())
    if alias is not None:
        if file is not None or quant is not None:
            raise InvalidRequest(
                f"{text!r} is an alias for {alias.repo} {alias.file}; "
                f"pass the repository ({alias.repo}) to pick another file"
            )
        return HubRef(repo=alias.repo, file=alias.file, revision=revision, alias=text.lower())
    for prefix in _HOST_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    repo, _, tag = text.partition(":")
    repo = repo.strip("/")
    if not _REPO.match(repo):
        forms = "hf.co/OWNER/REPO:QUANT, OWNER/REPO with --file NAME.gguf or --quant Q4_K_M, or an alias ("
        raise InvalidRequest(f"cannot read {model!r} as a Hugging Face model; use {forms}{', '.join(ALIASES)})")
    if tag:
        if file is not None or quant is not None:
            raise InvalidRequest(f"{model!r} already names the quant {tag!r}; drop --file/--quant")
        if tag.lower().endswith(".gguf"):
            file = tag
        elif tag.lower() != "latest":
            quant = tag
    return HubRef(repo=repo, file=file, quant=quant.upper() if quant else None, revision=revision)


def quant_of(filename: str) -> str | None:
    """The quant tag in a GGUF file name (``gemma-3-270m-it-Q8_0.gguf`` → ``Q8_0``), upper-cased."""
    match = _QUANT_IN_NAME.search(filename.rsplit("/", 1)[-1])
    return match.group(1).upper() if match else None


def pick_file(ref: HubRef, files: list[str]) -> str:
    """The one GGUF file of ``files`` that ``ref`` asks for; raises :class:`InvalidRequest` naming the choices."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())
    if ref.file is not None:
        if ref.file in files:
            return ref.file
        raise InvalidRequest(f"{ref.repo} has no file {ref.file!r}; GGUF files: {', '.join(ggufs) or 'none'}")
    if not ggufs:
        raise InvalidRequest(f"{ref.repo} has no GGUF file (is it a GGUF repository?)")
    by_quant: dict[str, list[str]] = {}
    for name in ggufs:
        by_quant.setdefault(quant_of(name) or "", []).append(name)
    wanted = [ref.quant] if ref.quant else [q for q in DEFAULT_QUANTS if q in by_quant]
    if not wanted and len(ggufs) == 1:
        wanted = [quant_of(ggufs[0]) or ""]
    for quant in wanted:
        matches = by_quant.get(quant, [])
        if len(matches) == 1 and not _SHARD.search(matches[0]):
            return matches[0]
        if matches and all(_SHARD.search(m) for m in matches):
            raise InvalidRequest(
                f"{ref.repo} splits {quant} into {len(matches)} files; split GGUFs are not "
                "supported by autotune pull yet"
            )
        if len(matches) > 1:
            raise InvalidRequest(f"{ref.repo} has several {quant} files ({', '.join(matches)}); pick one with --file")
    quants = ", ".join(sorted(q for q in by_quant if q)) or "none recognised"
    asked = f"no {ref.quant} file" if ref.quant else "several GGUF files and none is Q4_K_M or Q8_0"
    raise InvalidRequest(f"{ref.repo} has {asked}; quants there: {quants} (pick with --quant or --file)")
