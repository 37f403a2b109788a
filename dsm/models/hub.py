"""Model references: a local model directory, or a Hugging Face repo id resolved to one.

A reference is either a directory that exists (it always wins over a repo id spelled the
same), or `owner/name[@REVISION]` (`kyutai/stt-1b-en_fr`, `kyutai/stt-1b-en_fr@main`,
`kyutai/stt-1b-en_fr@<40-hex commit>`). A repo id is resolved through `huggingface_hub`
and its standard cache (`HF_HOME`, `HF_HUB_CACHE`; `HF_HUB_OFFLINE=1`: cache only), read
from the environment at each call, not only when `huggingface_hub` was first imported:

1. `config.json` is downloaded. As in Kyutai's repos it names the repo's files:
   `moshi_name` (LM weights, default "model.safetensors"), `mimi_name` (Mimi codec,
   default "tokenizer-e351c8d8-checkpoint125.safetensors"), `tokenizer_name` (default
   "tokenizer_spm_32k_3.model") and optionally `mimi_config_name`; `lora_name` is refused
   (dsm has no LoRA). A config with dsm's own `codec` key (a repo made from a dsm model
   directory) names its codec there instead, and its tokenizer defaults to dsm's
   "tokenizer.model".
2. Every named file is downloaded from the same commit, so all land in one snapshot folder
   `<cache>/models--owner--name/snapshots/<commit>/` (symlinks into `blobs/`). When the
   config names every file itself, that folder is the model directory
   (`dsm.models.model_dir`).
3. Otherwise the snapshot, which must not be written into, is completed by a small
   directory of dsm's own, `<dsm cache>/<owner>--<name>/<commit>/`: a config.json with
   the file names filled in and symlinks to the snapshot's files. The dsm cache is
   `$DSM_CACHE` if set, else `dsm/` beside the hub cache (`$HF_HOME/dsm` by default).
   A repo without config.json (Kyutai's moshiko / moshika) gets moshi's defaults there:
   the Moshi 7B LM (`dsm.models.presets` "moshi-7b"), `model_type: "moshi"` and the
   default file names.

Every failure is a `ModelRefError` that says what is missing and how to get it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOSHI_NAME = "model.safetensors"
MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_NAME = "tokenizer_spm_32k_3.model"
DSM_TOKENIZER_NAME = "tokenizer.model"  # dsm model directories' default (model_dir.py)
CONFIG_NAME = "config.json"
DSM_CODEC_FILES = ("config.json", "model.safetensors")  # a codec folder (dsm.codecs.save_codec)

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"({_PART})/({_PART})")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REF_FORM = "owner/name[@REVISION], e.g. kyutai/stt-1b-en_fr or kyutai/stt-1b-en_fr@main"


class ModelRefError(ValueError):
    """A model reference that is malformed or cannot be resolved; the message says why
    and what to download or change."""


@dataclass(frozen=True)
class RepoRef:
    """A Hugging Face model repo at a revision (None: the default branch, "main")."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"

    @property
    def download_command(self) -> str:
        """The shell command that puts the whole repo into the cache."""
        revision = "" if self.revision is None else f" --revision {self.revision}"
        return f"hf download {self.repo_id}{revision}"


def parse_repo_ref(text: str) -> RepoRef:
    """`owner/name[@REVISION]` as a RepoRef; ModelRefError says what is wrong otherwise."""
    text = text.strip()
    if not text:
        raise ModelRefError(f"empty model reference: give a model directory or a Hugging Face "
                            f"repo id ({_REF_FORM})")
    repo_id, at, revision = text.partition("@")
    if at and not revision.strip():
        raise ModelRefError(f"model reference {text!r}: '@' must be followed by a revision "
                            "(a branch, tag or commit)")
    if at and re.search(r"\s", revision):
        raise ModelRefError(f"model reference {text!r}: the revision has spaces in it")
    match = _REPO_ID.fullmatch(repo_id)
    if match is None or any(bad in repo_id for bad in ("--", "..")) or len(match[2]) > 96:
        raise ModelRefError(f"{text!r} is neither a model directory that exists nor a Hugging "
                            f"Face repo id ({_REF_FORM})")
    return RepoRef(repo_id, revision if at else None)


def is_repo_ref(text: str | Path) -> bool:
    """Whether `text` is spelled as a Hugging Face repo id (`owner/name[@REVISION]`)."""
    try:
        parse_repo_ref(str(text))
    except ModelRefError:
        return False
    return True


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text
            or text.endswith(("/", os.sep)) or text in (".", ".."))


def resolve_model_ref(ref: str | Path) -> Path:
    """A local model directory for `ref`: the directory itself if it exists, else the
    Hugging Face repo id resolved through the cache (see the module docstring)."""
    text = str(ref)
    if text.strip() and Path(text).expanduser().is_dir():
        return Path(text).expanduser()
    if isinstance(ref, Path) or _looks_like_path(text):
        raise ModelRefError(f"model directory not found: {text}")
    return resolve_repo(parse_repo_ref(text))


# ------------------------------------------------------------------------ environment

def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, when it is imported)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return _is_true(env) or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment now: HF_HUB_CACHE, then
    HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, else huggingface_hub's own default."""
    from huggingface_hub import constants

    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(env["HF_HUB_CACHE"])).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.path.expandvars(env["HUGGINGFACE_HUB_CACHE"])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def dsm_cache_dir() -> Path:
    """Where dsm writes the directories that complete a snapshot: $DSM_CACHE, else `dsm`
    beside the hub cache ($HF_HOME/dsm by default)."""
    if os.environ.get("DSM_CACHE"):
        return Path(os.path.expandvars(os.environ["DSM_CACHE"])).expanduser()
    return hub_cache_dir().parent / "dsm"


# ------------------------------------------------------------------------ resolution

def resolve_repo(repo: RepoRef) -> Path:
    """The model directory of `repo` (module docstring, steps 1-3)."""
    config_path = _config_path(repo)
    if config_path is None:  # moshi's defaults: the Moshi 7B LM, default file names
        from dsm.models.presets import preset

        raw = {**preset("moshi-7b").to_dict(), "model_type": "moshi"}
        files = _RepoFiles({"moshi_name": MOSHI_NAME, "mimi_name": MIMI_NAME,
                            "tokenizer_name": TOKENIZER_NAME}, set(), [])
        commit = repo.revision
    else:
        try:
            raw = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            raise ModelRefError(f"{repo}: {CONFIG_NAME} is not readable JSON ({error})") from None
        if not isinstance(raw, dict):
            raise ModelRefError(f"{repo}: {CONFIG_NAME} is not a JSON object")
        files = _repo_files(repo, raw)
        commit = config_path.parent.name  # every file from the config's commit
    paths: dict[str, Path] = {}
    snapshot: Path | None = None
    for name, where in files.wanted(config_path is not None):
        paths[name] = _download(RepoRef(repo.repo_id, commit), name, repo, where)
        snapshot = _snapshot_of(paths[name], name)
        commit = snapshot.name  # the first file pins the commit of the others
    assert snapshot is not None  # there is always the LM weights file
    if config_path is not None and files.given == set(files.names):
        return snapshot  # the config names every file: the snapshot is the model directory
    return _write_overlay(repo, snapshot, {**raw, **files.names}, paths)


@dataclass
class _RepoFiles:
    """The files a model repo's config.json names."""

    names: dict[str, str]  # config key -> file name, defaults filled in
    given: set[str]  # the keys the config.json itself sets
    extra: list[str]  # further files: the codec of a repo made from a dsm model directory

    def wanted(self, has_config: bool) -> list[tuple[str, str]]:
        """(file name, where its name comes from) for every file to download."""
        def where(key: str) -> str:
            if not has_config:
                return f"moshi's default {key}: the repo has no {CONFIG_NAME}"
            if key in self.given:
                return f"{key} in {CONFIG_NAME}"
            return f"moshi's default {key}, which {CONFIG_NAME} leaves out"

        return ([(name, where(key)) for key, name in self.names.items()]
                + [(name, f"codec in {CONFIG_NAME}") for name in self.extra])


def _repo_files(repo: RepoRef, raw: dict[str, Any]) -> _RepoFiles:
    """The files `raw` (a repo's config.json) names; refuses LoRA and names of files
    outside the repo."""
    if raw.get("lora_name"):
        raise ModelRefError(f"{repo}: {CONFIG_NAME} names LoRA weights (lora_name: "
                            f"{raw['lora_name']!r}); dsm has no LoRA: use a repo without "
                            "lora_name, or one with the LoRA merged into its weights")
    dsm_layout = "codec" in raw and "mimi_name" not in raw
    defaults = {"moshi_name": MOSHI_NAME,
                "tokenizer_name": DSM_TOKENIZER_NAME if dsm_layout else TOKENIZER_NAME}
    if not dsm_layout:
        defaults["mimi_name"] = MIMI_NAME
    given = {key: raw[key] for key in (*defaults, "mimi_config_name") if raw.get(key)}
    extra: list[str] = []
    if dsm_layout:
        kind, sep, rest = str(raw["codec"]).partition(":")
        if sep and kind in ("mimi", "encodec_24khz"):
            extra.append(rest)
        elif not sep:
            extra += [f"{raw['codec']}/{file}" for file in DSM_CODEC_FILES]
        else:
            raise ModelRefError(f"{repo}: {CONFIG_NAME} codec {raw['codec']!r} is not a file or "
                                "folder of the repo")
    for what, name in [*given.items(), *(("codec", name) for name in extra)]:
        if (not isinstance(name, str) or name.startswith(("hf://", "file://", "/"))
                or ".." in name.split("/")):
            raise ModelRefError(f"{repo}: {CONFIG_NAME} {what} is {name!r}; dsm reads only "
                                "files of the repo itself (a path relative to it)")
    return _RepoFiles({**defaults, **given}, set(given), extra)


def _config_path(repo: RepoRef) -> Path | None:
    """The repo's config.json in the cache (downloaded if need be), or None when the repo
    has none (a legacy moshi repo); ModelRefError when the repo itself is not there."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _hf_download(repo, CONFIG_NAME)
    except LocalEntryNotFoundError:
        commit = _cached_commit(repo)
        if commit is None or not _snapshot_dir(repo, commit).is_dir():
            raise _not_cached(repo, None, "") from None
        if _known_missing(repo, commit, CONFIG_NAME) or all(
                (_snapshot_dir(repo, commit) / name).is_file()
                for name in (MOSHI_NAME, MIMI_NAME, TOKENIZER_NAME)):
            return None  # no config.json, and moshi's default files: a moshi repo
        raise _not_cached(repo, CONFIG_NAME, "the model's configuration") from None
    except EntryNotFoundError:  # the hub says the repo has no config.json
        return None
    except Exception as error:  # noqa: BLE001 - every hub failure becomes a clear message
        raise _hub_error(repo, CONFIG_NAME, "the model's configuration", error) from None


def _download(at: RepoRef, filename: str, repo: RepoRef, where: str) -> Path:
    """`filename` of `at` (the repo at a pinned commit) in the cache; errors name the file,
    the config key it comes from (`where`) and the repo as the user spelled it."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _hf_download(at, filename)
    except LocalEntryNotFoundError:
        raise _not_cached(repo, filename, where) from None
    except EntryNotFoundError:
        raise ModelRefError(f"Hugging Face repo {repo} has no file {filename} ({where}): the "
                            f"repo does not hold what its {CONFIG_NAME} names") from None
    except Exception as error:  # noqa: BLE001
        raise _hub_error(repo, filename, where, error) from None


def _hf_download(repo: RepoRef, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo.repo_id, filename, revision=repo.revision,
                                cache_dir=hub_cache_dir(), local_files_only=hub_offline()))


def _hub_error(repo: RepoRef, filename: str, where: str, error: Exception) -> ModelRefError:
    """A ModelRefError for a failure of huggingface_hub other than a missing cache entry."""
    from huggingface_hub.utils import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return ModelRefError(f"Hugging Face repo {repo.repo_id} is gated: accept its terms on "
                             "huggingface.co and log in (`hf auth login`), then retry")
    if isinstance(error, RepositoryNotFoundError):
        return ModelRefError(f"no model directory {repo.repo_id} exists, and Hugging Face repo "
                             f"{repo.repo_id} does not exist (or is private: log in with "
                             "`hf auth login`); check the spelling (owner/name)")
    if isinstance(error, RevisionNotFoundError):
        return ModelRefError(f"Hugging Face repo {repo.repo_id} has no revision "
                             f"{repo.revision!r} (a branch, tag or commit of the repo)")
    if isinstance(error, HFValidationError):
        return ModelRefError(f"{repo} is not a valid Hugging Face repo id ({_REF_FORM}): {error}")
    return ModelRefError(f"{repo}: downloading {filename} ({where}) failed: "
                         f"{type(error).__name__}: {error}")


def _not_cached(repo: RepoRef, filename: str | None, where: str) -> ModelRefError:
    """What is missing from the cache when the hub cannot be asked (offline, no network)."""
    cache = hub_cache_dir()
    why = ("HF_HUB_OFFLINE is set, so nothing is downloaded: download it first with "
           f"`{repo.download_command}` (older huggingface_hub: `huggingface-cli download`), "
           "or unset HF_HUB_OFFLINE" if hub_offline() else
           f"and the Hugging Face Hub could not be reached: check the network, or download it "
           f"elsewhere with `{repo.download_command}` into that cache")
    if not _storage(repo).is_dir():
        return ModelRefError(f"no model directory {repo.repo_id} exists, and Hugging Face repo "
                             f"{repo.repo_id} is not in the cache {cache}; {why}")
    commit = _cached_commit(repo)
    if commit is None or not _snapshot_dir(repo, commit).is_dir():
        cached = sorted(p.name for p in (_storage(repo) / "refs").glob("*") if p.is_file())
        cached += sorted(p.name for p in (_storage(repo) / "snapshots").glob("*"))
        return ModelRefError(f"revision {repo.revision or 'main'!r} of Hugging Face repo "
                             f"{repo.repo_id} is not in the cache {cache} (cached: "
                             f"{', '.join(cached) or 'nothing'}); {why}")
    return ModelRefError(f"file {filename} ({where}) of Hugging Face repo {repo} is not in the "
                         f"cache {cache} (snapshot {commit}); {why}")


def _storage(repo: RepoRef) -> Path:
    return hub_cache_dir() / ("models--" + repo.repo_id.replace("/", "--"))


def _snapshot_dir(repo: RepoRef, commit: str) -> Path:
    return _storage(repo) / "snapshots" / commit


def _cached_commit(repo: RepoRef) -> str | None:
    """The commit the cache holds for `repo`'s revision (a commit is itself; a branch or
    tag is read from refs/), or None."""
    revision = repo.revision or "main"
    if _COMMIT.fullmatch(revision):
        return revision
    ref = _storage(repo) / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def _known_missing(repo: RepoRef, commit: str, filename: str) -> bool:
    """Whether huggingface_hub recorded that the hub had no `filename` at `commit`."""
    return (_storage(repo) / ".no_exist" / commit / filename).exists()


def _snapshot_of(path: Path, filename: str) -> Path:
    """The snapshot folder a downloaded `filename` lies in (`snapshots/<commit>/`)."""
    folder = path
    for _ in filename.split("/"):
        folder = folder.parent
    return folder


def _write_overlay(repo: RepoRef, snapshot: Path, raw: dict[str, Any],
                   files: dict[str, Path]) -> Path:
    """dsm's directory completing `snapshot`: `raw` as config.json, symlinks to `files`."""
    directory = dsm_cache_dir() / repo.repo_id.replace("/", "--") / snapshot.name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, target in files.items():
            link = directory / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                if link.is_symlink() and Path(os.readlink(link)) == target:
                    continue
                link.unlink()
            link.symlink_to(target)
        text = json.dumps(raw, indent=2) + "\n"
        config = directory / CONFIG_NAME
        if not config.is_file() or config.read_text() != text:
            partial = directory / f".{CONFIG_NAME}.{os.getpid()}.tmp"
            partial.write_text(text)
            partial.replace(config)  # atomic: a concurrent reader sees old or new, whole
    except OSError as error:
        raise ModelRefError(f"{repo}: cannot write dsm's model directory {directory} "
                            f"({error}); set DSM_CACHE to a writable folder") from None
    return directory
